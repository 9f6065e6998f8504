"""The test session keeps its files to itself: a stack running from this checkout (./var) never
shares its database, filesystem broker or agent state with the tests."""
from __future__ import annotations

from django.conf import settings


def test_session_data_dir_is_not_the_checkouts_var():
    data_dir = settings.DATA_DIR.resolve()
    assert data_dir != (settings.BASE_DIR / "var").resolve()
    assert not data_dir.is_relative_to(settings.BASE_DIR)


def test_broker_and_test_database_live_in_the_session_data_dir():
    if settings.CELERY_BROKER_URL == "filesystem://":
        assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"].startswith(str(settings.DATA_DIR))
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert settings.DATABASES["default"]["TEST"]["NAME"].startswith(str(settings.DATA_DIR))
