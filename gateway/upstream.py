"""A small pooled HTTP/1.1 client for the one hop the gateway makes: gateway → engine.

Why not httpx: measured on the project's 2-core machine, httpx spends ~270 µs of CPU per request
in its own layers, and its connection pool (httpcore) degrades badly with concurrency (64
concurrent keep-alive requests: ~200 requests/s, see encode/httpx#3215): alone an order of
magnitude over the data plane's budget. The hop is narrow (POST a JSON body to an
OpenAI-compatible engine on a worker address; read a Content-Length, chunked or close-delimited
response), so an `asyncio.Protocol` client is short, and costs ~45 µs of CPU per request
(asyncio streams: ~110 µs).

* One idle list per (host, port), LIFO. Idle connections older than `idle_expiry` (below uvicorn's
  5 s keep-alive, which vLLM and sglang use) or closed by the engine are not reused, and are closed
  by a reaper every `idle_expiry` (an engine that gets no more requests keeps no connection from us).
* A request on a *reused* connection that fails before any response byte is sent again once on a
  fresh connection (the engine closed an idle connection under us: not a replica failure).
* Errors are typed so the caller can tell "before the first byte" (retryable elsewhere) from
  failures after the response started.
* Flow control: reading from the engine pauses while more than 1 MiB waits for a slow client.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

MAX_HEAD = 64 * 1024
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class UpstreamError(Exception):
    """Base class. `before_response` is True when no response byte was received."""

    before_response = False


class UpstreamConnectError(UpstreamError):
    before_response = True


class UpstreamDisconnected(UpstreamError):
    """The connection was closed or reset before any response byte arrived."""

    before_response = True


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamConnectTimeout(UpstreamTimeout):
    before_response = True


class UpstreamProtocolError(UpstreamError):
    pass


# Response framing modes
_LENGTH, _CHUNKED, _CLOSE = 0, 1, 2
# Chunked decoder states
_SIZE, _DATA, _DATA_CRLF, _TRAILERS = 0, 1, 2, 3


class _Conn(asyncio.Protocol):
    """One keep-alive connection and the parser of the response currently on it."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.got_bytes = False
        self.head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.mode = _LENGTH
        self.remaining = 0
        self.chunk_state = _SIZE
        self.keep_alive = True
        self.done = False
        self.error: UpstreamError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future | None = None
        self.no_body = False

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.head is None:
            if self.waiter is not None or self.got_bytes:
                if self.got_bytes:
                    self._fail(UpstreamProtocolError("engine closed the connection inside the response head"))
                else:
                    self._fail(UpstreamDisconnected(f"engine closed the connection before answering ({exc or 'EOF'})"))
        elif not self.done:
            if self.mode == _CLOSE:
                self.done = True
                self.keep_alive = False
                self._wake()
            else:
                self._fail(UpstreamProtocolError(f"engine connection broke mid-body ({exc or 'EOF'})"))

    def eof_received(self):
        return False  # close the transport; connection_lost does the rest

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.head is None:
            self.buf += data
            self._parse_head()
        elif self.done:
            self._fail(UpstreamProtocolError("engine sent bytes after the response"))
            self.keep_alive = False
        else:
            self._body(data)

    # ------------------------------------------------------------------ parsing

    def _parse_head(self) -> None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._fail(UpstreamProtocolError("engine response head too large"))
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            try:
                version, status = parts[0], int(parts[1])
            except (IndexError, ValueError):
                self._fail(UpstreamProtocolError(f"bad status line {lines[0][:60]!r}"))
                return
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue & co.: the real head follows
            headers = []
            length = -1
            chunked = False
            connection = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip()
                headers.append((name, value))
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        self._fail(UpstreamProtocolError("bad content-length"))
                        return
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    connection = value.lower()
            self.keep_alive = (b"close" not in connection) if version == b"HTTP/1.1" else (b"keep-alive" in connection)
            if self.no_body or status in (204, 304):
                self.mode, self.remaining = _LENGTH, 0
            elif chunked:
                self.mode = _CHUNKED
            elif length >= 0:
                self.mode, self.remaining = _LENGTH, length
            else:
                self.mode, self.keep_alive = _CLOSE, False
            self.head = (status, headers)
            if self.mode == _LENGTH and self.remaining == 0:
                self.done = True
            rest = bytes(self.buf)
            self.buf = bytearray()
            if rest:
                self._body(rest)
            self._wake()
            return

    def _body(self, data: bytes) -> None:
        mode = self.mode
        if mode == _LENGTH:
            n = len(data)
            if n > self.remaining:
                self.keep_alive = False  # extra bytes: do not trust this connection again
                data = data[: self.remaining]
                n = len(data)
            self.remaining -= n
            if n:
                self._push(data)
            if self.remaining == 0:
                self.done = True
                self._wake()
        elif mode == _CLOSE:
            self._push(data)
        else:
            self._chunked(data)

    def _chunked(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            state = self.chunk_state
            if state == _SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._fail(UpstreamProtocolError(f"bad chunk size line {bytes(buf[pos:eol])[:40]!r}"))
                    return
                pos = eol + 2
                if size == 0:
                    self.chunk_state = _TRAILERS
                else:
                    self.remaining = size
                    self.chunk_state = _DATA
            elif state == _DATA:
                available = len(buf) - pos
                if not available:
                    break
                take = min(available, self.remaining)
                self._push(bytes(buf[pos : pos + take]))
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.chunk_state = _DATA_CRLF
            elif state == _DATA_CRLF:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self.chunk_state = _SIZE
            else:  # trailers, ended by an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                empty = eol == pos
                pos = eol + 2
                if empty:
                    self.done = True
                    if pos < len(buf):
                        self.keep_alive = False
                    self.buf = bytearray()
                    self._wake()
                    return
        del buf[:pos]

    def _push(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ consumer side

    async def _wait(self, timeout: float | None, what: str) -> None:
        waiter = self.waiter = self.loop.create_future()
        handle = self.loop.call_later(timeout, self._timed_out, waiter, what) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()

    @staticmethod
    def _timed_out(waiter: asyncio.Future, what: str) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout(what))

    def send(self, payload: bytes, no_body: bool) -> None:
        self._reset()
        self.no_body = no_body
        self.transport.write(payload)

    async def response_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        # The whole head must arrive within first_byte_timeout (one deadline, so an engine that
        # trickles bytes cannot stretch it): an engine that accepted the request and says nothing
        # is answered with 504 after this, not after the long idle timeout streams need.
        limit = self.pool.first_byte_timeout
        deadline = None if limit is None else self.loop.time() + limit
        what = "" if limit is None else f"engine did not start answering within {limit:g} s"
        while self.head is None:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamDisconnected("engine connection closed before answering")
            remaining = None if deadline is None else max(0.0, deadline - self.loop.time())
            await self._wait(remaining, what)
        return self.head

    async def next_chunk(self) -> bytes | None:
        while True:
            if self.chunks:
                data = self.chunks.popleft()
                self.buffered -= len(data)
                if self.paused and self.buffered < LOW_WATER:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            # Between body chunks: a stream may pause for long (a slow generation), so the idle bound is longer.
            timeout = self.pool.read_timeout
            await self._wait(timeout, f"engine sent nothing for {timeout:g} s" if timeout is not None else "")

    def usable(self, now: float) -> bool:
        return not self.closed and now - self.idle_since < self.pool.idle_expiry and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """A response whose head has been read; read the body with `iter_raw()` or `read()`.

    Always `close()` it (idempotent): the connection goes back to the pool when the body was read
    to the end and the engine allows keep-alive, otherwise it is closed.
    """

    __slots__ = ("status", "headers", "_conn")

    def __init__(self, conn: _Conn, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed)."""
        conn = self._conn
        while True:
            data = await conn.next_chunk()
            if data is None:
                return
            yield data

    async def read(self) -> bytes:
        conn = self._conn
        parts = []
        while True:
            data = await conn.next_chunk()
            if data is None:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(data)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.done and conn.keep_alive and conn.error is None and not conn.chunks and not conn.closed:
            conn.pool._release(conn)
        else:
            conn.close()


class UpstreamPool:
    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float | None = 600.0,
                 first_byte_timeout: float | None = 120.0, idle_expiry: float = 4.0,
                 max_idle_per_host: int = 256, user_agent: bytes = b"inferencekey-gateway") -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout  # idle time allowed between two body chunks
        self.first_byte_timeout = first_byte_timeout  # time from sending the request to the response head
        self.idle_expiry = idle_expiry
        self.max_idle_per_host = max_idle_per_host
        self.user_agent = user_agent
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._closed = False
        self._reaper: asyncio.TimerHandle | None = None

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Conn(self, key), host, port)
        except TimeoutError:
            raise UpstreamConnectTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(f"connect to {host}:{port} failed: {exc.strerror or exc!r}") from None
        return conn

    def _acquire_idle(self, key) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now):
                conn.reused = True
                return conn
            conn.close()
        return None

    def _release(self, conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)
        if self._reaper is None:
            self._reaper = conn.loop.call_later(self.idle_expiry, self._reap)

    def _reap(self) -> None:
        """Close idle connections past `idle_expiry`. Without this, connections to an engine that no
        longer gets requests (a replica drained in a rolling update) would stay open for as long as
        the engine allows, and its agent would wait for them before stopping it."""
        self._reaper = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [conn for conn in idle if conn.usable(now)]
            for conn in idle:
                if not conn.usable(now):
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_expiry, self._reap)

    async def request(self, host: str, port: int, method: bytes, path: bytes, body: bytes,
                      headers: list[tuple[bytes, bytes]]) -> Response:
        """Send one request and read the response head. Raises UpstreamError subclasses."""
        key = (host, port)
        head = [b"%s %s HTTP/1.1\r\nhost: %s:%d\r\nuser-agent: %s\r\ncontent-length: %d\r\n"
                % (method, path, host.encode(), port, self.user_agent, len(body))]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        head.append(body)
        payload = b"".join(head)
        no_body = method == b"HEAD"
        conn = self._acquire_idle(key)
        if conn is not None:
            try:
                return await self._exchange(conn, payload, no_body)
            except UpstreamDisconnected:
                pass  # the engine closed an idle connection under us: once more on a fresh one
        conn = await self._connect(key)
        return await self._exchange(conn, payload, no_body)

    async def _exchange(self, conn: _Conn, payload: bytes, no_body: bool) -> Response:
        try:
            conn.send(payload, no_body)
            status, headers = await conn.response_head()
        except BaseException:
            conn.close()
            raise
        return Response(conn, status, headers)

    async def aclose(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())
