"""Supervisor tests against the stand-in engine (tests/standin_engine), no Django."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx

from tests.agent.conftest import (
    STANDIN_BIN,
    free_port,
    make_spec,
    pid_gone,
    replica,
    wait_state,
    wait_until,
)
from workers.agent import logs
from workers.agent.state import proc_start_time


def state_file(sup) -> dict:
    return json.loads((sup.state_dir / "replicas.json").read_text())


def forget_stopped(sup) -> None:
    """What the agent loop does after a heartbeat that carried the final `stopped` state."""
    sup.report()
    sup.converge([])


def test_start_reaches_ready_and_stop_leaves_no_process(make_supervisor):
    sup = make_supervisor()
    port = free_port()
    sup.converge([make_spec("rep_a", port, model="tiny-llm")])

    snap = wait_state(sup, "rep_a", "ready")
    pid = snap["pid"]
    assert snap["port"] == port and snap["spec_hash"] == "h1" and snap["restarts"] == 0
    assert snap["message"] == "health check passed"
    assert "standin engine serving 'tiny-llm'" in snap["log_tail"]
    # it really is the engine, serving on the replica's port, in its own session
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
    assert models["data"][0]["id"] == "tiny-llm"
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid
    assert state_file(sup) == {
        "rep_a": {"pid": pid, "pgid": pid, "start_time": proc_start_time(pid), "port": port, "spec_hash": "h1"}
    }
    assert (sup.state_dir / "logs" / "rep_a.log").exists()

    sup.converge([])  # dropped from the desired list → stopped
    snap = wait_state(sup, "rep_a", "stopped")
    assert snap["pid"] is None
    assert pid_gone(pid)
    assert state_file(sup) == {}
    # reported once as stopped, then forgotten after the next converge
    sup.converge([])
    assert sup.report() == []


def test_dropped_replica_is_stopped_and_the_other_keeps_running(make_supervisor):
    sup = make_supervisor()
    pa, pb = free_port(), free_port()
    spec_a, spec_b = make_spec("rep_a", pa), make_spec("rep_b", pb)
    sup.converge([spec_a, spec_b])
    pid_a = wait_state(sup, "rep_a", "ready")["pid"]
    pid_b = wait_state(sup, "rep_b", "ready")["pid"]

    sup.converge([spec_b])
    wait_state(sup, "rep_a", "stopped")
    assert pid_gone(pid_a)
    snap_b = replica(sup, "rep_b")
    assert snap_b["state"] == "ready" and snap_b["pid"] == pid_b and not pid_gone(pid_b)
    assert set(state_file(sup)) == {"rep_b"}


def test_kill_9_restarts_with_backoff(make_supervisor):
    sup = make_supervisor()
    port = free_port()
    sup.converge([make_spec("rep_a", port)])
    old = wait_state(sup, "rep_a", "ready")["pid"]

    os.kill(old, signal.SIGKILL)
    snap = wait_until(
        lambda: (s := replica(sup, "rep_a")) and s["state"] == "ready" and s["pid"] not in (None, old) and s,
        timeout=15,
        message="a new ready engine",
    )
    assert snap["restarts"] == 1
    assert snap["exit_code"] == -signal.SIGKILL
    assert pid_gone(old)
    assert "killed by SIGKILL" in snap["log_tail"]
    assert state_file(sup)["rep_a"]["pid"] == snap["pid"]


def test_changed_spec_hash_restarts_the_engine(make_supervisor):
    sup = make_supervisor()
    port = free_port()
    sup.converge([make_spec("rep_a", port, "h1", model="m1")])
    old = wait_state(sup, "rep_a", "ready", spec_hash="h1")["pid"]

    sup.converge([make_spec("rep_a", port, "h2", model="m2")])
    snap = wait_state(sup, "rep_a", "ready", spec_hash="h2")
    assert snap["pid"] != old and pid_gone(old)
    assert snap["restarts"] == 0  # a requested restart is not a crash
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"] == "m2"
    assert state_file(sup)["rep_a"]["spec_hash"] == "h2"

    # the same spec again is a no-op
    sup.converge([make_spec("rep_a", port, "h2", model="m2")])
    time.sleep(0.3)
    assert replica(sup, "rep_a")["pid"] == snap["pid"]


def test_vllm_version_not_installed_fails_with_clear_message(make_supervisor, tmp_path):
    versions = tmp_path / "vllm-versions"
    versions.mkdir()
    sup = make_supervisor(vllm_versions_dir=versions)
    sup.converge([make_spec("rep_v", free_port(), vllm_version="9.9.9")])

    snap = wait_state(sup, "rep_v", "failed")
    assert snap["message"] == (
        f"vLLM 9.9.9 is not installed on this worker (looked for vllm-9.9.9 on PATH, {versions}/9.9.9/bin/vllm)"
    )
    assert snap["pid"] is None
    assert "vLLM 9.9.9 is not installed" in snap["log_tail"]


def test_vllm_version_found_in_versions_dir(make_supervisor, tmp_path, monkeypatch):
    versions = tmp_path / "vllm-versions"
    (versions / "0.11.0" / "bin").mkdir(parents=True)
    (versions / "0.11.0" / "bin" / "vllm").symlink_to(STANDIN_BIN / "vllm")
    sup = make_supervisor(vllm_versions_dir=versions)
    port = free_port()
    # argv[0] says plain "vllm" but a stand-in that is NOT on PATH: only the pinned one can run
    spec = make_spec("rep_v", port, vllm_version="0.11.0")
    monkeypatch.setenv(
        "PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(STANDIN_BIN))
    )
    sup.converge([spec])
    snap = wait_state(sup, "rep_v", "ready")
    with open(f"/proc/{snap['pid']}/cmdline", "rb") as fh:
        assert b"server.py" in fh.read()


def test_command_not_on_path_fails_naming_it(make_supervisor, monkeypatch):
    monkeypatch.setenv(
        "PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != str(STANDIN_BIN))
    )
    sup = make_supervisor()
    sup.converge([make_spec("rep_x", free_port())])
    snap = wait_state(sup, "rep_x", "failed")
    assert "'vllm'" in snap["message"] and "not found" in snap["message"]
    assert snap["pid"] is None
    assert not (sup.state_dir / "replicas.json").exists() or state_file(sup) == {}


def test_warmup_requests_run_before_ready(make_supervisor):
    sup = make_supervisor()
    port = free_port()
    warmup = [
        {"method": "POST", "path": "/v1/completions", "json": {"model": "m", "prompt": "warm-1"}},
        {"method": "GET", "path": "/v1/models"},
    ]
    sup.converge([make_spec("rep_w", port, env={"STANDIN_LOG_REQUESTS": "1"}, warmup=warmup)])
    wait_state(sup, "rep_w", "ready")

    text = (sup.state_dir / "logs" / "rep_w.log").read_text()
    first = text.index("standin: POST /v1/completions")
    second = text.index("standin: GET /v1/models")
    ready = text.index("ready: health check passed")
    assert text.index("standin: GET /health") < first < second < ready


def test_failing_warmup_never_becomes_ready(make_supervisor):
    sup = make_supervisor(backoff_base=0.2)
    port = free_port()
    sup.converge([make_spec("rep_w", port, warmup=[{"method": "POST", "path": "/api/pull", "json": {"name": "x"}}])])
    snap = wait_state(sup, "rep_w", "backoff")
    assert "warmup 1/1 POST /api/pull returned HTTP 404" in snap["message"]
    assert snap["pid"] is None
    seen = set()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        seen.add(replica(sup, "rep_w")["state"])
        time.sleep(0.02)
    assert "ready" not in seen


def test_start_timeout_goes_to_backoff_and_kills_the_engine(make_supervisor):
    sup = make_supervisor(start_timeout=1.0, backoff_base=5.0)
    port = free_port()
    sup.converge([make_spec("rep_slow", port, env={"STANDIN_BOOT_S": "60"})])
    pid = wait_until(lambda: (s := replica(sup, "rep_slow")) and s["pid"], message="a pid")
    snap = wait_state(sup, "rep_slow", "backoff")
    assert "not healthy within 1s" in snap["message"] and "restarting in 5s" in snap["message"]
    assert pid_gone(pid)
    assert state_file(sup) == {}


def test_sigterm_ignored_escalates_to_sigkill(make_supervisor):
    sup = make_supervisor(stop_timeout=1.0)
    port = free_port()
    sup.converge([make_spec("rep_t", port, env={"STANDIN_IGNORE_SIGTERM": "1"})])
    pid = wait_state(sup, "rep_t", "ready")["pid"]

    started = time.monotonic()
    sup.converge([])
    assert replica(sup, "rep_t")["state"] == "stopping"  # converge does not block on the stop
    wait_state(sup, "rep_t", "stopped", timeout=10)
    elapsed = time.monotonic() - started
    assert pid_gone(pid)
    assert 0.9 <= elapsed < 1.8, elapsed  # escalation at stop_timeout, not the later backstop
    assert replica(sup, "rep_t")["exit_code"] == -signal.SIGKILL


def test_unhealthy_after_three_failed_probes_and_recovers(make_supervisor):
    sup = make_supervisor(probe_timeout=0.3)
    port = free_port()
    sup.converge([make_spec("rep_u", port)])
    pid = wait_state(sup, "rep_u", "ready")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        snap = wait_state(sup, "rep_u", "unhealthy", timeout=10)
        assert "consecutive health checks failed" in snap["message"]
        assert snap["pid"] == pid
    finally:
        os.kill(pid, signal.SIGCONT)
    snap = wait_state(sup, "rep_u", "ready", timeout=10)
    assert snap["pid"] == pid and snap["restarts"] == 0


def test_new_supervisor_adopts_a_running_engine(make_supervisor, tmp_path):
    state_dir = tmp_path / "state"
    port = free_port()
    spec = make_spec("rep_a", port)
    sup1 = make_supervisor(state_dir)
    sup1.converge([spec])
    pid = wait_state(sup1, "rep_a", "ready")["pid"]
    sup1.shutdown(stop_engines=False)  # the agent exits, leaving the engine running
    assert not pid_gone(pid)

    sup2 = make_supervisor(state_dir)
    snap = replica(sup2, "rep_a")  # known (and reported) before the control plane says anything
    assert snap is not None and snap["pid"] == pid and snap["spec_hash"] == "h1"
    sup2.converge([spec])
    snap = wait_state(sup2, "rep_a", "ready")
    assert snap["pid"] == pid and snap["restarts"] == 0
    assert "adopted" not in snap["message"]

    # it is really supervised: a crash of the adopted engine is noticed and it is restarted
    os.kill(pid, signal.SIGKILL)
    snap = wait_until(
        lambda: (s := replica(sup2, "rep_a")) and s["state"] == "ready" and s["pid"] not in (None, pid) and s,
        timeout=15,
        message="restart of the adopted engine",
    )
    assert snap["restarts"] == 1 and pid_gone(pid)


def test_adopted_engine_not_desired_is_stopped(make_supervisor, tmp_path):
    state_dir = tmp_path / "state"
    sup1 = make_supervisor(state_dir)
    sup1.converge([make_spec("rep_a", free_port())])
    pid = wait_state(sup1, "rep_a", "ready")["pid"]
    sup1.shutdown(stop_engines=False)

    sup2 = make_supervisor(state_dir)
    sup2.converge([])
    wait_state(sup2, "rep_a", "stopped")
    assert pid_gone(pid)
    assert state_file(sup2) == {}


def test_stale_state_entry_is_cleaned_and_leftovers_killed(make_supervisor, tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # An "engine" whose leader died but left a child in its process group, as a crashed agent could.
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, start_new_session=True, text=True
    )
    leftover = int(proc.stdout.readline())
    proc.wait()
    assert not pid_gone(leftover) and os.getpgid(leftover) == proc.pid
    (state_dir / "replicas.json").write_text(
        json.dumps(
            {
                "rep_dead": {"pid": proc.pid, "pgid": proc.pid, "start_time": 12345, "port": 1, "spec_hash": "x"},
            }
        )
    )

    sup = make_supervisor(state_dir)
    assert sup.report() == []
    assert state_file(sup) == {}
    wait_until(lambda: pid_gone(leftover), timeout=5, message="the leftover group member to be killed")


def test_log_rotation_copy_truncate(tmp_path):
    path = tmp_path / "logs" / "rep.log"
    path.parent.mkdir()
    fh = logs.open_for_engine(path)  # what the engine holds: an O_APPEND descriptor
    for i in range(5):
        fh.write(f"generation {i}\n".encode() + b"x" * 100)
        assert logs.rotate_if_needed(path, max_bytes=50, backups=3)
    fh.write(b"after rotation\n")
    fh.close()
    assert path.read_bytes() == b"after rotation\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rep.log", "rep.log.1", "rep.log.2", "rep.log.3"]
    assert path.with_name("rep.log.1").read_bytes().startswith(b"generation 4")
    assert path.with_name("rep.log.3").read_bytes().startswith(b"generation 2")
    assert not logs.rotate_if_needed(path, max_bytes=50)
    assert logs.tail(path) == "after rotation\n"
