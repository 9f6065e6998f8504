"""Settings for the test session (pytest runs with `--ds=tests.settings`, see pyproject.toml).

The app's settings with a data dir of the session's own, chosen before they load (pytest-django
imports the settings before any conftest.py runs): a stack running from this checkout (`bash
scripts/run`, ./var) keeps its SQLite file, filesystem broker and agent state to itself, so tests
never drop messages into its queue. Child processes inherit the same dir through the environment.
"""
import atexit
import os
import shutil
import tempfile

_data_dir = os.environ.get("INFERENCEKEY_TEST_DATA_DIR")
if not _data_dir:
    _data_dir = tempfile.mkdtemp(prefix="ik-tests-")
    os.environ["INFERENCEKEY_TEST_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, True)
os.environ["INFERENCEKEY_DATA_DIR"] = _data_dir

from inferencekey_web.settings import *  # noqa: E402,F403
