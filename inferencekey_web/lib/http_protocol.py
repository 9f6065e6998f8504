"""uvicorn's httptools protocol with a deadline for the request head (slowloris).

uvicorn closes idle keep-alive connections (`--timeout-keep-alive`) but has no bound on a request
head that never completes: a client that opens a connection and sends half a header line (or one
byte now and then) holds it forever, and a few hundred such clients hold that many sockets and
file descriptors (measured: 400 of them still open after 75 s). Here every request head - the first
on a connection and each later one on a kept-alive connection - must be complete within
`INFERENCEKEY_HEADER_TIMEOUT_S` (default 20 s) of its first byte, or the connection is closed.

Used by `manage.py up`; in production run uvicorn with
`--http inferencekey_web.lib.http_protocol:HeaderTimeoutProtocol` (or behind a proxy that bounds
header time, e.g. nginx's client_header_timeout).
"""
from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _header_timeout() -> float:
    raw = os.environ.get("INFERENCEKEY_HEADER_TIMEOUT_S", "").strip()
    try:
        return float(raw) if raw else 20.0
    except ValueError:
        raise RuntimeError(f"INFERENCEKEY_HEADER_TIMEOUT_S must be a number, got {raw!r}") from None


HEADER_TIMEOUT_S = _header_timeout()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes a connection whose request head is not complete in time."""

    header_timeout = HEADER_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        # The first bytes of the next request on a kept-alive connection start its head's deadline
        # (uvicorn cancels its keep-alive timer on any data).
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_head_timer()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self.header_timeout > 0:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
