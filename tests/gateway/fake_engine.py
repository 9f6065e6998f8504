"""A scriptable fake engine for the gateway tests, running on its own event loop in a thread.

Unlike the stand-in engine it records what it receives and can misbehave on purpose:
* `stream_gap_s`: pause between SSE frames (to prove the gateway does not buffer);
* SSE frames split across TCP writes, two frames in one write, and a usage-only chunk;
* `fail_next`: answer the next N model requests with `fail_status` (and an OpenAI error body);
* embeddings without `model`, rerank results unsorted with only `score`;
* `mode`: "hang" (read the request, never answer), "huge" (a `huge_bytes` non-streamed answer to
  chat or rerank, written in 1 MiB pieces), "giant_frame" (an SSE stream whose second frame is
  `huge_bytes` long without a blank line until its end).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time


class FakeEngine:
    def __init__(self, *, stream_gap_s: float = 0.0, keep_alive: bool = True) -> None:
        self.stream_gap_s = stream_gap_s
        self.keep_alive = keep_alive
        self.requests: list[dict] = []  # {"path", "headers", "body"}
        self.fail_next = 0
        self.fail_status = 503
        self.mode: str | None = None
        self.huge_bytes = 8 * 1024 * 1024
        self.sent_at: list[float] = []  # monotonic time of each streamed write
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeEngine:
        self._thread = threading.Thread(target=self._run, name="fake-engine", daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "fake engine did not start"
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                parsed = json.loads(body) if body else None
                self.requests.append({"method": method, "path": path, "headers": headers, "body": parsed})
                await self._respond(path, parsed, writer)
                if not self.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def _conn(self) -> bytes:
        return b"keep-alive" if self.keep_alive else b"close"

    async def _json(self, writer, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
                     % (status, len(data), self._conn()) + data)
        await writer.drain()

    async def _respond(self, path: str, body, writer) -> None:
        if self.mode == "hang":
            await asyncio.Event().wait()  # accepted, never answered (cancelled when the engine stops)
        if self.mode == "huge":
            await self._huge(path, writer)
            return
        if self.mode == "giant_frame":
            await self._giant_frame(writer)
            return
        if self.fail_next > 0:
            self.fail_next -= 1
            await self._json(writer, self.fail_status,
                             {"error": {"message": "engine overloaded", "type": "ServiceUnavailable", "code": self.fail_status}})
            return
        if path == "/v1/chat/completions" and body.get("stream"):
            await self._stream(writer)
        elif path == "/v1/chat/completions":
            # no "model": the gateway must fill it in
            await self._json(writer, 200, {"id": "c1", "object": "chat.completion",
                                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake"},
                                                        "finish_reason": "stop"}]})
        elif path == "/v1/embeddings":
            await self._json(writer, 200, {"object": "list",
                                           "data": [{"index": i, "embedding": [float(i), 0.5]} for i, _ in enumerate(body["input"])]})
        elif path == "/v1/rerank":
            scores = [0.1, 0.9, 0.5, 0.7][: len(body["documents"])]
            await self._json(writer, 200, {"results": [{"index": i, "score": s} for i, s in enumerate(scores)]})
        elif path == "/v1/bad-request":
            await self._json(writer, 400, {"object": "error", "message": "bad things", "type": "BadRequestError"})
        else:
            await self._json(writer, 404, {"detail": "Not Found"})

    async def _stream(self, writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                     b"connection: %s\r\n\r\n" % self._conn())

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        def frame(obj) -> bytes:
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        def delta(text, finish=None):
            return {"id": "s1", "object": "chat.completion.chunk", "model": "fake",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}

        first = frame(delta("Hel"))
        writes = [
            frame({"id": "s1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            first[:20],  # a frame split across two writes
            first[20:],
            frame(delta("lo")) + frame(delta(" world")),  # two frames in one write
            frame(delta("", "stop")),
            frame({"id": "s1", "object": "chat.completion.chunk", "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}),
            b"data: [DONE]\n\n",
        ]
        for data in writes:
            writer.write(chunk(data))
            await writer.drain()
            self.sent_at.append(time.monotonic())
            if self.stream_gap_s:
                await asyncio.sleep(self.stream_gap_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _huge(self, path: str, writer) -> None:
        if path == "/v1/rerank":
            item = b'{"index":0,"score":0.5},'
            head, tail = b'{"results":[', b'{"index":1,"score":0.9}]}'
        else:
            item = b"x" * 1024
            head = b'{"id":"c1","object":"chat.completion","model":"fake","choices":[{"index":0,"message":{"content":"'
            tail = b'"}}]}'
        count = max(1, (self.huge_bytes - len(head) - len(tail)) // len(item))
        length = len(head) + count * len(item) + len(tail)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
                     % (length, self._conn()) + head)
        piece = item * max(1, (1024 * 1024) // len(item))
        per_piece = len(piece) // len(item)
        left = count
        while left > 0:
            n = min(left, per_piece)
            writer.write(piece if n == per_piece else item * n)
            await writer.drain()
            left -= n
        writer.write(tail)
        await writer.drain()

    async def _giant_frame(self, writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                     b"connection: %s\r\n\r\n" % self._conn())

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        writer.write(chunk(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'))
        writer.write(chunk(b"data: "))
        piece = b"y" * (1024 * 1024)
        for _ in range(max(1, self.huge_bytes // len(piece))):
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(chunk(b"\n\ndata: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
