"""Slow request heads are cut off: uvicorn with HeaderTimeoutProtocol closes connections whose
request head is not complete in time, on a fresh connection and on a kept-alive one."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from inferencekey_web.lib.http_protocol import HeaderTimeoutProtocol


class QuickHeaderTimeout(HeaderTimeoutProtocol):
    header_timeout = 0.5


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(hello, host="127.0.0.1", port=port, http=QuickHeaderTimeout, lifespan="off",
                            log_level="warning", timeout_keep_alive=120)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(10)


def closed_by_server(sock: socket.socket, within: float = 10.0) -> bool:
    sock.settimeout(within)  # a hang guard: the server closes long before
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_with_a_partial_request_head_are_closed(server):
    socks = [socket.create_connection(("127.0.0.1", server)) for _ in range(100)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert all(closed_by_server(s) for s in socks)
    finally:
        for s in socks:
            s.close()


def test_a_kept_alive_connection_is_closed_when_its_next_head_stalls(server):
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.8)  # idle longer than the head timeout: keep-alive (120 s) governs idleness
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        assert closed_by_server(s)
