"""The agent runs only a backend's own program, with a minimal environment, and keeps its files to itself."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.agent.conftest import STANDIN_BIN, free_port, make_spec, wait_until
from workers.agent import logs
from workers.agent.state import save_credentials


def wait_state(sup, rid, state, timeout=20.0):
    def check():
        return next((s for s in sup.report() if s["id"] == rid and s["state"] == state), None)

    return wait_until(check, timeout, message=f"{rid} to be {state}")


def standin_report(sup, rid) -> dict:
    def line():
        path = logs.log_path(sup.state_dir, rid)
        text = path.read_text(errors="replace") if path.exists() else ""
        return next((ln for ln in text.splitlines() if ln.startswith("standin-report: ")), None)

    return json.loads(wait_until(line, 20, message="the stand-in's report")[len("standin-report: "):])


@pytest.mark.parametrize("argv", [
    ["sh", "-c", "id"],
    ["python3", "-c", "import os"],
    ["/bin/bash"],
    [str(STANDIN_BIN / "vllm"), "serve", "m"],  # the right program, but by path
    ["env", "vllm", "serve", "m"],
])
def test_agent_refuses_programs_outside_the_backend_allow_list(make_supervisor, argv):
    sup = make_supervisor()
    spec = {**make_spec("rep_bad", free_port()), "argv": argv}
    sup.converge([spec])
    snap = wait_state(sup, "rep_bad", "failed")
    assert "refusing to run" in snap["message"] and "`vllm`" in snap["message"]
    assert snap["pid"] is None


def test_agent_refuses_loader_variables_from_the_server(make_supervisor):
    sup = make_supervisor()
    sup.converge([make_spec("rep_ld", free_port(), env={"LD_PRELOAD": "/tmp/evil.so"})])
    snap = wait_state(sup, "rep_ld", "failed")
    assert "LD_PRELOAD" in snap["message"] and snap["pid"] is None


def test_engine_environment_is_minimal(make_supervisor, monkeypatch):
    for name in ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "IK_JOIN_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "leak-me")
    sup = make_supervisor()
    sup.converge([make_spec("rep_env", free_port(), env={"STANDIN_REPORT": "1", "HF_TOKEN": "hf_mine"})])
    report = standin_report(sup, "rep_env")
    environ = report["environ"]
    assert "leak-me" not in environ.values()
    assert environ["HF_TOKEN"] == "hf_mine" and os.environ["PATH"] in environ["PATH"]  # (pyenv shims prepend)
    assert environ["HOME"] == str(sup.state_dir / "engine-home") == report["cwd"]


def test_state_dir_and_credentials_are_private(make_supervisor, tmp_path):
    state = tmp_path / "old-agent"
    state.mkdir(mode=0o755)
    (state / "credentials.json").write_text("{}")
    os.chmod(state / "credentials.json", 0o644)  # as an older agent may have left it
    sup = make_supervisor(state)
    assert stat.S_IMODE((sup.state_dir / "credentials.json").stat().st_mode) == 0o600
    save_credentials(sup.state_dir, "http://x", "wrk_1", "ik_wrk_secret")
    assert stat.S_IMODE(sup.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sup.state_dir / "logs").stat().st_mode) == 0o700
    assert stat.S_IMODE((sup.state_dir / "credentials.json").stat().st_mode) == 0o600


def world_can_run(path) -> bool:
    """`nobody` can run the stand-in: every directory above it searchable, the files readable."""
    path = Path(path).resolve()
    dirs_ok = all(os.stat(p).st_mode & stat.S_IXOTH for p in path.parents)
    return dirs_ok and bool(os.stat(path).st_mode & stat.S_IROTH) and shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(os.geteuid() != 0 or not world_can_run(STANDIN_BIN.parent / "server.py"),
                    reason="switching the engine's OS user needs a root agent and a stand-in `nobody` can run")
def test_engine_user_cannot_read_the_agent_credentials(make_supervisor):
    sup = make_supervisor(engine_user="nobody")
    save_credentials(sup.state_dir, "http://x", "wrk_1", "ik_wrk_secret")
    creds = sup.state_dir / "credentials.json"
    env = {"STANDIN_REPORT": "1", "STANDIN_REPORT_READ_HEX": str(creds).encode().hex()}
    sup.converge([make_spec("rep_u", free_port(), env=env)])
    report = standin_report(sup, "rep_u")
    assert report["uid"] != 0 and report["environ"]["USER"] == "nobody"
    assert report["reads"][str(creds)].startswith("error")
    wait_state(sup, "rep_u", "ready")


@pytest.mark.parametrize("args", [
    lambda state: ["--chat-template", str(state / "credentials.json")],
    lambda state: ["--chat-template", "../credentials.json"],  # relative to the engine's scratch HOME
    lambda state: ["--chat-template=/proc/1/environ"],
    lambda state: ["--allowed-local-media-path", "/"],
    lambda state: ["--lora-modules", f"x={state.parent}"],
])
def test_arguments_naming_the_agent_files_are_refused(make_supervisor, args):
    sup = make_supervisor()
    sup.converge([make_spec("rep_p", free_port(), extra_args=tuple(args(sup.state_dir)))])
    snap = wait_state(sup, "rep_p", "failed")
    assert "refusing to start" in snap["message"] and snap["pid"] is None


def test_ordinary_model_paths_are_not_refused():
    from workers.agent.programs import path_refusal

    values = ["meta-llama/Llama-3.1-8B", "--download-dir=/models", "http://proxy:3128/x", "hf_abc"]
    assert path_refusal(values, protected=["/srv/agent"], cwd="/srv/agent/engine-home") is None


def test_engine_found_through_a_relative_path_entry_starts(make_supervisor, monkeypatch):
    # `up --agent-path tests/standin_engine/bin` from the checkout: engines start in their own HOME.
    monkeypatch.chdir(STANDIN_BIN.parent.parent)
    monkeypatch.setenv("PATH", os.path.relpath(STANDIN_BIN) + os.pathsep + os.environ["PATH"])
    sup = make_supervisor()
    sup.converge([make_spec("rep_rel", free_port())])
    assert wait_state(sup, "rep_rel", "ready")["pid"]
