"""Slow-header connections against a running server: are they closed, and when?

    .venv/bin/python bench/slow_headers.py [--url http://127.0.0.1:8000] [--connections 400] [--wait 75]

Opens N connections, sends half a request head on each (`GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: `),
then watches for the server to close them, up to --wait seconds. Prints how many were closed and
when. Against `manage.py up` (HeaderTimeoutProtocol, INFERENCEKEY_HEADER_TIMEOUT_S=20) every one is
closed after about 20 s; against plain uvicorn none is.
"""
from __future__ import annotations

import argparse
import selectors
import socket
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--wait", type=float, default=75.0)
    args = parser.parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    for _ in range(args.connections):
        sock = socket.create_connection((host, port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    closed_at: list[float] = []
    open_count = args.connections
    while open_count and time.monotonic() - started < args.wait:
        for key, _ in sel.select(timeout=1.0):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed_at.append(time.monotonic() - started)
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_count -= 1
    print(f"{args.connections} connections with a partial request head, watched for {args.wait:g} s")
    print(f"closed by the server: {len(closed_at)}; still open: {open_count}")
    if closed_at:
        print(f"closed after: first {min(closed_at):.1f} s, last {max(closed_at):.1f} s")
    for key in list(sel.get_map().values()):
        key.fileobj.close()


if __name__ == "__main__":
    main()
