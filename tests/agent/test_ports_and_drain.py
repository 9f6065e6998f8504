"""Engine ports free for real on the host, readiness proven by the engine's own socket, and drains
of removed serving engines (PROTOCOL.md §3)."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import httpx
import pytest

from tests.agent.conftest import free_port, make_spec, pid_gone, replica, wait_state, wait_until
from workers.agent import logs, ports


@pytest.fixture
def impostor():
    """Another program answering 200 to everything on a port (another workload's engine, say)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b'{"impostor": true}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_engine_moves_off_a_port_another_program_holds(make_supervisor, impostor):
    sup = make_supervisor()
    sup.converge([make_spec("rep_p", impostor)])
    snap = wait_state(sup, "rep_p", "ready")
    assert snap["port"] != impostor
    assert httpx.get(f"http://127.0.0.1:{snap['port']}/v1/models").json()["data"][0]["id"] == "test-model"
    assert f"port {impostor} is in use on this host" in logs.tail(logs.log_path(sup.state_dir, "rep_p"))


def test_engine_that_cannot_bind_never_becomes_ready(make_supervisor, impostor, monkeypatch):
    # The bind test raced with the other program (it took the port right after): the engine fails
    # with EADDRINUSE while the health check on the port is answered 200 by the other program.
    monkeypatch.setattr(ports, "port_is_free", lambda port: True)
    sup = make_supervisor(backoff_base=0.1, backoff_cap=0.2)
    sup.converge([make_spec("rep_b", impostor)])
    seen = set()

    def restarted_twice():
        snap = replica(sup, "rep_b")
        seen.add(snap["state"])
        return snap["restarts"] >= 2

    wait_until(restarted_twice, timeout=20, interval=0.01, message="two failed starts")
    assert "ready" not in seen


def test_readiness_requires_the_engine_to_own_the_listening_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert ports.listener_owned_by(os.getsid(0), port) is True
        assert ports.listener_owned_by(1, port) is False  # init's session does not hold it
    assert ports.listener_owned_by(os.getsid(0), port) is False  # nothing listens any more


def test_a_listening_port_is_not_free_and_the_next_free_one_is_chosen():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not ports.port_is_free(port)
        chosen = ports.choose_port([port], taken=set())
        assert chosen != port and ports.port_is_free(chosen) and chosen in ports.PORT_RANGE
    assert ports.port_is_free(port)


def test_port_substitution_covers_flags_and_host_port_env_values():
    argv, env = ports.substitute_port(["vllm", "serve", "m", "--port", "20000", "--max-model-len", "20000"],
                                      {"OLLAMA_HOST": "127.0.0.1:20000", "OTHER": "x20000"}, 20000, 20007)
    assert argv == ["vllm", "serve", "m", "--port", "20007", "--max-model-len", "20000"]
    assert env == {"OLLAMA_HOST": "127.0.0.1:20007", "OTHER": "x20000"}
    assert ports.substitute_port(["x", "--port=20000"], {}, 20000, 20001)[0] == ["x", "--port=20001"]


def test_two_replicas_of_one_agent_never_share_a_moved_port(make_supervisor, impostor):
    sup = make_supervisor()
    sup.converge([make_spec("rep_1", impostor), make_spec("rep_2", impostor)])
    one, two = wait_state(sup, "rep_1", "ready"), wait_state(sup, "rep_2", "ready")
    assert len({one["port"], two["port"], impostor}) == 3


def test_removed_serving_engine_finishes_in_flight_requests_before_it_stops(make_supervisor):
    sup = make_supervisor(drain_grace=0.2, drain_timeout=20)
    port = free_port()
    sup.converge([make_spec("rep_d", port, env={"STANDIN_DELAY_MS": "1500"})])
    pid = wait_state(sup, "rep_d", "ready")["pid"]
    result = {}

    def call():
        with httpx.Client() as client:
            result["response"] = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                                             json={"messages": [{"role": "user", "content": "hi"}]})

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: ports.established_connections(port), message="the request to reach the engine")
    sup.converge([])
    assert replica(sup, "rep_d")["state"] == "draining"
    thread.join(10)
    assert result["response"].status_code == 200
    wait_state(sup, "rep_d", "stopped", timeout=10)
    assert pid_gone(pid)


def test_drain_waits_for_the_grace_period_and_is_cancelled_when_wanted_again(make_supervisor):
    sup = make_supervisor(drain_grace=30, drain_timeout=60)
    port = free_port()
    spec = make_spec("rep_g", port)
    sup.converge([spec])
    pid = wait_state(sup, "rep_g", "ready")["pid"]
    sup.converge([])
    time.sleep(0.5)
    assert replica(sup, "rep_g")["state"] == "draining" and not pid_gone(pid)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # still serving
    sup.converge([spec])
    assert replica(sup, "rep_g")["state"] == "ready"
    sup.stop_all(timeout=10)  # the agent's own stop does not drain
    assert pid_gone(pid)
