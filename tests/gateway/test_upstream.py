"""The gateway's HTTP/1.1 client to engines: framing, keep-alive reuse, typed failures."""
from __future__ import annotations

import asyncio

import pytest

from gateway.upstream import UpstreamConnectError, UpstreamPool, UpstreamProtocolError, UpstreamTimeout

from .conftest import free_port


async def serve(responses, *, close_after=False):
    """A server answering each request with the next raw response; returns (server, port, seen)."""
    seen = []
    queue = list(responses)

    async def handle(reader, writer):
        try:
            while queue:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                seen.append((head, body))
                writer.write(queue.pop(0))
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def fetch(pool, port, body=b"{}"):
    response = await pool.request("127.0.0.1", port, b"POST", b"/v1/x", body, [(b"content-type", b"application/json")])
    try:
        return response.status, response.header(b"content-type"), [c async for c in response.iter_raw()]
    finally:
        response.close()


def test_content_length_chunked_and_close_delimited_bodies():
    async def go():
        server, port, seen = await serve([
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        ])
        pool = UpstreamPool()
        try:
            assert await fetch(pool, port) == (200, b"application/json", [b'{"a":1}'])
            assert pool.idle_count() == 1
            status, _, chunks = await fetch(pool, port)
            assert (status, b"".join(chunks)) == (200, b"abcde")
            status, _, chunks = await fetch(pool, port)
            assert b"".join(chunks) == b"until close"
            assert pool.idle_count() == 0  # close-delimited: not reusable
            assert len(seen) == 3
            assert seen[0][0].startswith(b"POST /v1/x HTTP/1.1\r\n")
            assert b"content-length: 2" in seen[0][0]
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(go())


def test_a_stale_idle_connection_is_replaced_transparently():
    async def go():
        # The server answers one request per connection, then closes it (like an expired keep-alive).
        ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        server, port, seen = await serve([ok, ok], close_after=True)
        pool = UpstreamPool()
        try:
            assert (await fetch(pool, port))[2] == [b"ok"]
            await asyncio.sleep(0.05)  # the server has closed that connection by now
            assert (await fetch(pool, port))[2] == [b"ok"]
            assert len(seen) == 2
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(go())


def test_a_pooled_connection_closed_as_the_request_arrives_is_retried_on_a_fresh_one():
    async def go():
        # The engine's keep-alive ends just as the next request arrives: it reads nothing more and
        # closes; the pool cannot see it coming (the connection looked open), so it sends again.
        ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        connections = []

        async def handle(reader, writer):
            connections.append(writer)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(ok)
            await writer.drain()
            if len(connections) == 1:
                await reader.readuntil(b"\r\n\r\n")  # the second request, on the same connection
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool()
        try:
            assert (await fetch(pool, port))[2] == [b"ok"]
            assert (await fetch(pool, port))[2] == [b"ok"]
            assert len(connections) == 2
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(go())


def test_idle_connections_are_closed_once_expired_without_further_requests():
    async def go():
        ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        server, port, seen = await serve([ok])
        pool = UpstreamPool(idle_expiry=0.2)
        try:
            assert (await fetch(pool, port))[2] == [b"ok"]
            assert pool.idle_count() == 1
            await asyncio.sleep(0.6)
            assert pool.idle_count() == 0
        finally:
            await pool.aclose()
            server.close()

    asyncio.run(go())


def test_refused_connection_is_a_connect_error():
    async def go():
        pool = UpstreamPool()
        with pytest.raises(UpstreamConnectError) as info:
            await fetch(pool, free_port())
        assert info.value.before_response

    asyncio.run(go())


def test_truncated_body_and_silence_are_errors():
    async def go():
        server, port, _ = await serve([b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"], close_after=True)
        pool = UpstreamPool()
        try:
            with pytest.raises(UpstreamProtocolError):
                await fetch(pool, port)
        finally:
            server.close()

        async def silent(reader, writer):
            await asyncio.sleep(5)

        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        pool = UpstreamPool(first_byte_timeout=0.2, read_timeout=30)
        try:
            with pytest.raises(UpstreamTimeout) as info:
                await fetch(pool, quiet.sockets[0].getsockname()[1])
            assert not info.value.before_response  # the engine may be working: not retried
            assert "did not start answering within 0.2 s" in str(info.value)
        finally:
            quiet.close()

    asyncio.run(go())


def test_read_timeout_bounds_the_silence_between_chunks_not_the_head():
    async def go():
        async def pauses(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            await asyncio.sleep(5)  # then silent mid-body

        server = await asyncio.start_server(pauses, "127.0.0.1", 0)
        pool = UpstreamPool(first_byte_timeout=30, read_timeout=0.2)
        try:
            response = await pool.request("127.0.0.1", server.sockets[0].getsockname()[1], b"POST", b"/v1/x", b"{}", [])
            chunks = response.iter_raw()
            assert await chunks.__anext__() == b"abc"
            with pytest.raises(UpstreamTimeout) as info:
                await chunks.__anext__()
            assert "sent nothing for 0.2 s" in str(info.value)
            response.close()
        finally:
            server.close()

    asyncio.run(go())
