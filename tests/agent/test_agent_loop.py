"""Agent loop tests: register + heartbeat against a tiny fake control plane, no Django."""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.agent.conftest import REPO, free_port, make_spec, pid_gone, wait_until
from workers.agent import cli
from workers.agent.gpus import GpuDetector, parse_cuda_version, parse_query_output
from workers.agent.loop import Agent, AgentConfig

JOIN_TOKEN = "ik_join_0123abcd_" + "a" * 64
FAST = 0.2  # heartbeat_interval_s the fake control plane hands out

FAKE_NVIDIA_SMI = r"""#!/bin/sh
case "$1" in
  --query-gpu=*)
    echo "0, GPU-aaaa-0001, NVIDIA A100-SXM4-80GB, 81920, 1024, 7, 580.65"
    echo ""
    echo "1, GPU-aaaa-0002, NVIDIA A100-SXM4-80GB, 81920, [N/A], [Not Supported], 580.65"
    ;;
  *)
    echo "| NVIDIA-SMI 580.65.06    Driver Version: 580.65.06    CUDA Version: 13.0     |"
    ;;
esac
"""


class FakeControlPlane:
    """register + heartbeat, recording every request; behaviour switchable from the test."""

    def __init__(self):
        self.lock = threading.Lock()
        self.join_tokens = {JOIN_TOKEN}
        self.registers: list[dict] = []
        self.heartbeats: list[dict] = []  # {"auth": ..., "body": ...}
        self.tokens: dict[str, str] = {}  # worker_token -> worker_id
        self.desired: list[dict] = []
        self.offlines: list[dict] = []  # goodbye calls on a clean stop
        self.fail_next = 0  # answer the next N heartbeats with 500
        self.drop_next = 0  # close the connection without answering the next N heartbeats
        cp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/agent/register":
                    with cp.lock:
                        cp.registers.append(body)
                        if body.get("join_token") not in cp.join_tokens:
                            return self._reply(401, {"error": "join token is invalid, used or expired"})
                        cp.join_tokens.discard(body["join_token"])  # single use
                        worker_id = f"wrk_{len(cp.registers)}"
                        token = f"ik_wrk_{secrets.token_hex(4)}_{secrets.token_hex(32)}"
                        cp.tokens[token] = worker_id
                    return self._reply(
                        201, {"worker_id": worker_id, "worker_token": token, "heartbeat_interval_s": FAST}
                    )
                if self.path == "/api/agent/heartbeat":
                    auth = self.headers.get("Authorization", "")
                    with cp.lock:
                        cp.heartbeats.append({"auth": auth, "body": body})
                        if cp.drop_next:
                            cp.drop_next -= 1
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return None
                        if cp.fail_next:
                            cp.fail_next -= 1
                            return self._reply(500, {"error": "database is on fire"})
                        if auth.removeprefix("Bearer ") not in cp.tokens:
                            return self._reply(401, {"error": "unknown worker credential"})
                        desired = list(cp.desired)
                    return self._reply(200, {"heartbeat_interval_s": FAST, "state": "online", "replicas": desired})
                if self.path == "/api/agent/offline":
                    with cp.lock:
                        cp.offlines.append({"auth": self.headers.get("Authorization", ""), "body": body})
                    return self._reply(200, {"state": "offline"})
                return self._reply(404, {"error": "not found"})

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # dropped connections are on purpose
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def revoke_all(self):
        with self.lock:
            self.tokens.clear()

    def reported(self, replica_id: str) -> list[dict]:
        """Every report of ``replica_id`` so far, in order."""
        with self.lock:
            beats = list(self.heartbeats)
        return [r for hb in beats for r in hb["body"].get("replicas", []) if r["id"] == replica_id]

    def last_report(self, replica_id: str) -> dict | None:
        reports = self.reported(replica_id)
        return reports[-1] if reports else None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cp():
    plane = FakeControlPlane()
    yield plane
    plane.close()


class AgentThread:
    """Runs Agent.run() in a thread (as the CLI would, minus signal handling)."""

    def __init__(self, config: AgentConfig, **kwargs):
        self.agent = Agent(config, **kwargs)
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.code = self.agent.run()

    def stop(self, timeout=20):
        self.agent.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "agent did not stop"
        return self.code


def config(cp, tmp_path, **kw) -> AgentConfig:
    opts = dict(
        server=cp.url,
        join_token=JOIN_TOKEN,
        state_dir=tmp_path / "agent-state",
        name="box-1",
        cpu_only=True,
        labels={"zone": "lab"},
        stop_timeout=2.0,
        start_timeout=20.0,
    )
    opts.update(kw)
    return AgentConfig(**opts)


def ready_report(cp, replica_id, **match):
    def check():
        rep = cp.last_report(replica_id)
        return rep if rep and rep["state"] == "ready" and all(rep.get(k) == v for k, v in match.items()) else None

    return wait_until(check, timeout=20, message=f"a heartbeat reporting {replica_id} ready")


def read_environ(pid: int) -> dict:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = fh.read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if b"=" in item)


def test_registers_with_gpus_and_runs_the_desired_replica(cp, tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("IK_FAKE_NVIDIA_SMI", str(smi))
    monkeypatch.setenv("IK_JOIN_TOKEN", JOIN_TOKEN)  # must not leak into engines
    port = free_port()
    cp.desired = [make_spec("rep_1", port, env={"KEY": "VALUE"}, gpu_indices=[1])]

    run = AgentThread(config(cp, tmp_path, cpu_only=False))
    try:
        wait_until(lambda: cp.registers, message="register")
        reg = cp.registers[0]
        assert reg["join_token"] == JOIN_TOKEN and reg["name"] == "box-1" and reg["labels"] == {"zone": "lab"}
        assert reg["cpu_only"] is False and reg["agent_version"] == "0.1.0" and reg["address"] == "127.0.0.1"
        assert reg["cpu_count"] >= 1 and reg["memory_mb"] > 0
        assert reg["gpus"] == [
            {
                "index": 0,
                "uuid": "GPU-aaaa-0001",
                "name": "NVIDIA A100-SXM4-80GB",
                "memory_total_mb": 81920,
                "memory_used_mb": 1024,
                "utilization_pct": 7,
                "driver_version": "580.65",
                "cuda_version": "13.0",
            },
            {
                "index": 1,
                "uuid": "GPU-aaaa-0002",
                "name": "NVIDIA A100-SXM4-80GB",
                "memory_total_mb": 81920,
                "memory_used_mb": None,
                "utilization_pct": None,
                "driver_version": "580.65",
                "cuda_version": "13.0",
            },
        ]

        creds_path = tmp_path / "agent-state" / "credentials.json"
        creds = json.loads(creds_path.read_text())
        assert creds["server"] == cp.url and creds["worker_id"] == "wrk_1" and creds["worker_token"] in cp.tokens
        assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600

        rep = ready_report(cp, "rep_1", port=port, spec_hash="h1")
        assert rep["restarts"] == 0 and rep["message"] == "health check passed" and "standin engine" in rep["log_tail"]
        assert set(rep) == {"id", "state", "pid", "port", "restarts", "exit_code", "message", "log_tail", "spec_hash"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"] == "test-model"
        env = read_environ(rep["pid"])
        assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["KEY"] == "VALUE" and "IK_JOIN_TOKEN" not in env

        beat = cp.heartbeats[-1]
        assert beat["auth"] == f"Bearer {creds['worker_token']}"
        assert beat["body"]["agent_version"] == "0.1.0" and len(beat["body"]["gpus"]) == 2

        # the control plane drops the replica: reported as stopped (once), then no more
        pid = rep["pid"]
        cp.desired = []
        wait_until(lambda: (r := cp.last_report("rep_1")) and r["state"] == "stopped", message="stopped report")
        assert pid_gone(pid)
        n = len(cp.heartbeats)
        wait_until(lambda: len(cp.heartbeats) >= n + 2, message="two more heartbeats")
        assert cp.heartbeats[-1]["body"]["replicas"] == []
        assert [r["state"] for r in cp.reported("rep_1")].count("stopped") == 1
    finally:
        code = run.stop()
    assert code == 0
    assert len(cp.registers) == 1


def test_heartbeat_failures_are_retried_and_never_crash(cp, tmp_path):
    port = free_port()
    cp.desired = [make_spec("rep_1", port)]
    run = AgentThread(config(cp, tmp_path))
    try:
        ready_report(cp, "rep_1")
        pid = cp.last_report("rep_1")["pid"]
        start = len(cp.heartbeats)
        with cp.lock:
            cp.fail_next = 3  # HTTP 500
            cp.drop_next = 2  # connection closed without a reply
        wait_until(lambda: len(cp.heartbeats) >= start + 7, timeout=20, message="heartbeats after the failures")
        assert run.thread.is_alive()
        # the engine was left alone during the outage and is still reported
        rep = ready_report(cp, "rep_1")
        assert rep["pid"] == pid and rep["restarts"] == 0
    finally:
        assert run.stop() == 0
    # default exit leaves the engine running for adoption; this test cleans it up itself
    assert not pid_gone(pid)
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), message="engine cleanup")


def test_restart_reuses_credentials_adopts_engine_and_exits_3_on_revocation(cp, tmp_path):
    """Through the real CLI (`python -m workers.agent`) as separate processes."""
    state_dir = tmp_path / "agent-state"
    port = free_port()
    cp.desired = [make_spec("rep_1", port)]
    argv = [
        sys.executable,
        "-m",
        "workers.agent",
        "--server",
        cp.url,
        "--join-token",
        JOIN_TOKEN,
        "--state-dir",
        str(state_dir),
        "--cpu-only",
        "--stop-timeout",
        "2",
        "--label",
        "zone=lab",
    ]

    def spawn():
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = spawn()
    try:
        pid = ready_report(cp, "rep_1")["pid"]
        first.send_signal(signal.SIGTERM)
        out1, _ = first.communicate(timeout=15)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out1
    assert "leaving engines running" in out1
    assert not pid_gone(pid)  # left running for adoption
    assert json.loads((state_dir / "replicas.json").read_text())["rep_1"]["pid"] == pid

    n = len(cp.heartbeats)
    second = spawn()  # the join token is used up: only the stored credential can work
    try:
        wait_until(
            lambda: len(cp.heartbeats) > n + 2 and cp.last_report("rep_1")["state"] == "ready",
            timeout=20,
            message="heartbeats from the restarted agent",
        )
        assert len(cp.registers) == 1
        rep = cp.last_report("rep_1")
        assert rep["pid"] == pid and rep["restarts"] == 0  # adopted, not restarted

        cp.revoke_all()  # worker deleted → next heartbeat gets 401
        out2, _ = second.communicate(timeout=20)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 3, out2
    assert "401" in out2
    assert pid_gone(pid)
    assert json.loads((state_dir / "replicas.json").read_text()) == {}
    assert not (state_dir / "credentials.json").exists()


def test_401_on_heartbeat_stops_engines_and_returns_3(cp, tmp_path):
    port = free_port()
    cp.desired = [make_spec("rep_1", port), make_spec("rep_2", free_port())]
    run = AgentThread(config(cp, tmp_path, stop_timeout=1.0))
    pids = [ready_report(cp, "rep_1")["pid"], ready_report(cp, "rep_2")["pid"]]
    cp.revoke_all()
    run.thread.join(20)
    assert not run.thread.is_alive()
    assert run.code == 3
    assert all(pid_gone(p) for p in pids)


def test_rejected_join_token_exits_2_without_credentials(cp, tmp_path):
    state_dir = tmp_path / "agent-state"
    code = cli.main(["--server", cp.url, "--join-token", "ik_join_bad", "--state-dir", str(state_dir), "--cpu-only"])
    assert code == 2
    assert cp.registers and cp.registers[0]["join_token"] == "ik_join_bad"
    assert not (state_dir / "credentials.json").exists()


def test_missing_server_or_state_dir_is_a_usage_error(monkeypatch, capsys):
    for var in ("IK_SERVER", "IK_STATE_DIR", "IK_JOIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["--state-dir", "/tmp/x"]) == 2
    assert "--server" in capsys.readouterr().err


def test_env_fallbacks_and_once(cp, tmp_path, monkeypatch):
    """IK_SERVER / IK_JOIN_TOKEN / IK_STATE_DIR work; --once settles, reports and exits 0."""
    state_dir = tmp_path / "agent-state"
    monkeypatch.setenv("IK_SERVER", cp.url)
    monkeypatch.setenv("IK_JOIN_TOKEN", JOIN_TOKEN)
    monkeypatch.setenv("IK_STATE_DIR", str(state_dir))
    cp.desired = [make_spec("rep_1", free_port())]
    code = cli.main(["--cpu-only", "--once", "--stop-engines-on-exit", "--stop-timeout", "2"])
    assert code == 0
    assert len(cp.registers) == 1 and (state_dir / "credentials.json").exists()
    reports = cp.reported("rep_1")
    assert reports[-1]["state"] == "ready"
    assert pid_gone(reports[-1]["pid"])  # --stop-engines-on-exit


def test_gpu_parsing_is_robust(tmp_path, monkeypatch):
    text = "\n0, GPU-1, NVIDIA H100 80GB HBM3, 81559, 0, 0, 580.65\n garbage line \n1, GPU-2, Weird, Name, 100, [N/A], 3, 580.65\n"
    gpus = parse_query_output(text, "13.0")
    assert [g["uuid"] for g in gpus] == ["GPU-1", "GPU-2"]
    assert gpus[1]["name"] == "Weird, Name" and gpus[1]["memory_used_mb"] is None and gpus[1]["utilization_pct"] == 3
    assert parse_cuda_version("| Driver Version: 580.65.06   CUDA Version: 13.0  |") == "13.0"
    assert parse_cuda_version("no banner") is None

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere → CPU-only host
    assert GpuDetector().detect() == []
    broken = tmp_path / "nvidia-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert GpuDetector().detect() == []


@pytest.mark.parametrize("stop_engines", [True, False])
def test_clean_stop_tells_the_control_plane_the_worker_goes_offline(cp, tmp_path, stop_engines):
    runner = AgentThread(config(cp, tmp_path, stop_engines_on_exit=stop_engines))
    wait_until(lambda: cp.heartbeats, message="a first heartbeat")
    assert runner.stop() == 0
    [goodbye] = cp.offlines
    assert goodbye["auth"] == cp.heartbeats[-1]["auth"] and goodbye["body"] == {"engines_stopped": stop_engines}
