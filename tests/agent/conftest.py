"""Shared helpers for the worker-agent tests (no Django, no database).

Every process started by these tests inherits ``IK_AGENT_TEST_MARK`` in its environment; after each
test, any such process still alive is killed and the test fails: the agent must never leave an
orphan engine behind.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN_BIN = REPO / "tests" / "standin_engine" / "bin"
MARK = "IK_AGENT_TEST_MARK"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    last = predicate()
    if last:
        return last
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def marked_pids(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if f"{MARK}={token}".encode() in env.split(b"\0") and not pid_gone(int(name)):
            found.append(int(name))
    return found


def make_spec(
    replica_id: str,
    port: int,
    spec_hash: str = "h1",
    *,
    model: str = "test-model",
    argv0: str = "vllm",
    env: dict | None = None,
    warmup: list | None = None,
    vllm_version: str | None = None,
    gpu_indices: list | None = None,
    extra_args: tuple = (),
) -> dict:
    return {
        "id": replica_id,
        "spec_hash": spec_hash,
        "backend": "vllm",
        "argv": [argv0, "serve", model, "--host", "127.0.0.1", "--port", str(port), *extra_args],
        "env": env or {},
        "port": port,
        "health_path": "/health",
        "vllm_version": vllm_version,
        "warmup": warmup or [],
        "gpu_indices": gpu_indices if gpu_indices is not None else [],
    }


@pytest.fixture(autouse=True)
def _no_orphans(monkeypatch):
    """Put the stand-in ``vllm`` on PATH, mark child processes, and fail on leftovers."""
    token = uuid.uuid4().hex
    monkeypatch.setenv(MARK, token)
    monkeypatch.setenv("IK_ENGINE_ENV", MARK)  # engines get a minimal environment: pass the mark on
    monkeypatch.setenv("PATH", f"{STANDIN_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("IK_FAKE_NVIDIA_SMI", raising=False)
    for var in ("STANDIN_DELAY_MS", "STANDIN_BOOT_S", "STANDIN_LOG_REQUESTS", "STANDIN_IGNORE_SIGTERM"):
        monkeypatch.delenv(var, raising=False)
    yield token
    leftovers = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        leftovers = marked_pids(token)
        if not leftovers:
            break
        time.sleep(0.05)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, f"processes left running after the test: {leftovers}"


@pytest.fixture
def make_supervisor(tmp_path):
    """Factory for Supervisors with test-friendly timings; every one is stopped at teardown."""
    from workers.agent.supervisor import Supervisor

    created = []

    def factory(state_dir=None, **kwargs):
        # drain_timeout 0: a removed engine stops at once (the drain tests ask for a drain explicitly)
        opts = {"stop_timeout": 2.0, "start_timeout": 20.0, "probe_interval": 0.1, "probe_timeout": 1.0,
                "drain_timeout": 0.0}
        opts.update(kwargs)
        sup = Supervisor(state_dir or tmp_path / "state", **opts)
        created.append(sup)
        return sup

    yield factory
    for sup in reversed(created):
        sup.stop_all(timeout=15)


def replica(sup, replica_id: str) -> dict | None:
    for snap in sup.report():
        if snap["id"] == replica_id:
            return snap
    return None


def wait_state(sup, replica_id: str, state: str, timeout: float = 15.0, **match) -> dict:
    """Wait until the replica reports ``state`` (and the given field values); return the snapshot."""

    def check():
        snap = replica(sup, replica_id)
        if snap and snap["state"] == state and all(snap.get(k) == v for k, v in match.items()):
            return snap
        return None

    try:
        return wait_until(check, timeout, message=f"{replica_id} to be {state} {match or ''}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now: {replica(sup, replica_id)}") from None
