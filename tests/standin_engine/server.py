#!/usr/bin/env python3
"""Stand-in for ``vllm serve``: a small, fast OpenAI-compatible server for tests and benchmarks.

    python server.py serve MODEL --host H --port P [--delay-ms N] [--boot-s S] [--stream-gap-ms N]
        [other flags ignored]

Standard library only (asyncio + a hand-rolled HTTP/1.1 parser with keep-alive).

Environment: ``STANDIN_DELAY_MS`` (latency added to every model endpoint request),
``STANDIN_BOOT_S`` (seconds before /health returns 200; 503 until then),
``STANDIN_LOG_REQUESTS=1`` (print ``standin: METHOD PATH`` per request to stdout),
``STANDIN_IGNORE_SIGTERM=1`` (ignore SIGTERM, to exercise SIGKILL escalation),
``STANDIN_REPORT=1`` (print one ``standin-report: {json}`` line at start: the engine's environment,
uid, working directory, and for each path of ``STANDIN_REPORT_READ`` (``:``-separated) whether it
could be read: what a hostile engine would see, for the containment tests; ``STANDIN_REPORT_READ_HEX``
gives the same list hex-encoded, as an engine that finds the paths itself would, unseen by the agent),
``STANDIN_KEEPALIVE_S`` (an idle keep-alive connection is closed after this long; default 5, like the
uvicorn server inside vLLM and sglang).

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
POST /v1/embeddings, POST /v1/rerank (also /rerank, /v2/rerank). Deterministic outputs:
chat replies ``"echo: <last user message>"``; completions echo the prompt; embeddings are
8-dimensional unit vectors derived from SHA-256 of each input; rerank scores are query/document
word overlap, returned in the ORIGINAL document order (callers must sort). ``top_n`` is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import os
import re
import signal
import struct
import sys
import time

EMBED_DIM = 8
MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class BadRequest(Exception):
    pass


# --------------------------------------------------------------------------- config


def parse_args(argv: list[str]) -> dict:
    """Accept the shape of ``vllm serve MODEL --host H --port P ...``; unknown flags are ignored."""
    cfg = {
        "model": os.environ.get("STANDIN_MODEL", "standin-model"),
        "served_name": None,
        "host": "127.0.0.1",
        "port": 8000,
        "delay_ms": float(os.environ.get("STANDIN_DELAY_MS", "0") or 0),
        "boot_s": float(os.environ.get("STANDIN_BOOT_S", "0") or 0),
        "stream_gap_ms": 0.0,
    }
    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    positional = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            name = name.replace("_", "-")
            if not eq:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and not nxt.startswith("--"):
                    value = nxt
                    i += 1
                else:
                    value = None
            if name == "host" and value:
                cfg["host"] = value
            elif name == "port" and value:
                cfg["port"] = int(value)
            elif name == "delay-ms" and value:
                cfg["delay_ms"] = float(value)
            elif name == "stream-gap-ms" and value:
                cfg["stream_gap_ms"] = float(value)
            elif name == "boot-s" and value:
                cfg["boot_s"] = float(value)
            elif name == "model" and value:
                cfg["model"] = value
            elif name == "served-model-name" and value:
                cfg["served_name"] = value
        else:
            positional.append(arg)
        i += 1
    if positional:
        cfg["model"] = positional[0]
    cfg["name"] = cfg["served_name"] or cfg["model"]
    return cfg


# --------------------------------------------------------------------------- model logic


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def n_tokens(text: str) -> int:
    return len(text.split())


def content_text(content) -> str:
    """Message content: a string, or a list of parts ({"type": "text", "text": ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def split3(text: str) -> list[str]:
    """Split a reply into ~3 non-empty pieces for streaming."""
    if len(text) < 3:
        return [text] if text else []
    step = math.ceil(len(text) / 3)
    return [text[i : i + step] for i in range(0, len(text), step)]


def embed(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(digest[2 * i] * 256 + digest[2 * i + 1]) / 32767.5 - 1.0 for i in range(EMBED_DIM)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 6) for v in raw]


def overlap_score(query: str, doc: str) -> float:
    q = set(words(query))
    if not q:
        return 0.0
    return round(len(q & set(words(doc))) / len(q), 6)


class Engine:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.name = cfg["name"]
        self.delay = cfg["delay_ms"] / 1000.0
        self.ready_at = time.monotonic() + cfg["boot_s"]
        self.created = int(time.time())
        self.ids = itertools.count(1)
        self.log_requests = os.environ.get("STANDIN_LOG_REQUESTS") == "1"

    @property
    def booted(self) -> bool:
        return time.monotonic() >= self.ready_at

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{os.getpid():x}{next(self.ids):08x}"

    # each handler returns (status, body_dict) or ("stream", async_generator_of_sse_payloads)

    def models(self, _body):
        return 200, {
            "object": "list",
            "data": [
                {
                    "id": self.name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "vllm",
                    "root": self.cfg["model"],
                    "parent": None,
                    "max_model_len": 4096,
                }
            ],
        }

    def chat(self, body):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        last_user = ""
        prompt_tokens = 0
        for msg in messages:
            if not isinstance(msg, dict):
                raise BadRequest("each message must be an object")
            text = content_text(msg.get("content"))
            prompt_tokens += n_tokens(text)
            if msg.get("role") == "user":
                last_user = text
        reply = f"echo: {last_user}"
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_tokens(reply),
            "total_tokens": prompt_tokens + n_tokens(reply),
        }
        rid, created = self.new_id("chatcmpl"), int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return "stream", self._chat_stream(rid, created, reply, usage, include_usage)
        return 200, {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    def _chat_stream(self, rid, created, reply, usage, include_usage):
        def chunk(delta, finish=None):
            c = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                c["usage"] = None
            return c

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in split3(reply)]
        events.append(chunk({}, "stop"))
        if include_usage:
            events.append(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": self.name,
                    "choices": [],
                    "usage": usage,
                }
            )
        return events

    def completions(self, body):
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            prompts = prompt
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join(str(p) for p in prompt)]
        else:
            raise BadRequest("'prompt' must be a string or a list of strings")
        prompt_tokens = sum(n_tokens(p) for p in prompts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": prompt_tokens, "total_tokens": 2 * prompt_tokens}
        rid, created = self.new_id("cmpl"), int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = []
            for idx, text in enumerate(prompts):
                for piece in split3(text):
                    events.append(self._cmpl_chunk(rid, created, idx, piece, None, include_usage))
                events.append(self._cmpl_chunk(rid, created, idx, "", "stop", include_usage))
            if include_usage:
                events.append(
                    {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": self.name,
                        "choices": [],
                        "usage": usage,
                    }
                )
            return "stream", events
        return 200, {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": self.name,
            "choices": [
                {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"} for i, text in enumerate(prompts)
            ],
            "usage": usage,
        }

    def _cmpl_chunk(self, rid, created, idx, text, finish, include_usage):
        c = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": self.name,
            "choices": [{"index": idx, "text": text, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            c["usage"] = None
        return c

    def embeddings(self, body):
        inp = body.get("input")
        if isinstance(inp, str):
            inputs = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
            inputs = inp
        elif isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            inputs = [" ".join(str(x) for x in inp)]
        elif isinstance(inp, list) and inp and all(isinstance(x, list) for x in inp):
            inputs = [" ".join(str(t) for t in x) for x in inp]
        else:
            raise BadRequest("'input' must be a string or a non-empty list")
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = embed(text)
            if b64:
                vec = base64.b64encode(struct.pack(f"<{EMBED_DIM}f", *vec)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(n_tokens(t) for t in inputs)
        return 200, {
            "object": "list",
            "data": data,
            "model": self.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def rerank(self, body):
        query = body.get("query")
        docs = body.get("documents")
        if not isinstance(query, str):
            raise BadRequest("'query' must be a string")
        if not isinstance(docs, list):
            raise BadRequest("'documents' must be a list")
        results = []
        tokens = n_tokens(query)
        for i, doc in enumerate(docs):
            if isinstance(doc, dict):
                doc = doc.get("text")
            if not isinstance(doc, str):
                raise BadRequest("each document must be a string or {'text': ...}")
            tokens += n_tokens(doc)
            results.append({"index": i, "relevance_score": overlap_score(query, doc), "document": {"text": doc}})
        return 200, {
            "id": self.new_id("rerank"),
            "model": self.name,
            "usage": {"total_tokens": tokens},
            "results": results,
        }


# --------------------------------------------------------------------------- HTTP


def _error(status: int, message: str, etype: str = "BadRequestError") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": etype, "param": None, "code": status}}


def _response(status: int, body: bytes, keep_alive: bool, ctype: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"content-type: {ctype}\r\n"
        f"content-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _json_response(status: int, obj, keep_alive: bool) -> bytes:
    return _response(status, json.dumps(obj, separators=(",", ":")).encode("utf-8"), keep_alive)


class Server:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.keepalive_s = float(os.environ.get("STANDIN_KEEPALIVE_S", "5") or 5)
        e = engine
        self.routes = {
            "/v1/models": ("GET", e.models),
            "/v1/chat/completions": ("POST", e.chat),
            "/v1/completions": ("POST", e.completions),
            "/v1/embeddings": ("POST", e.embeddings),
            "/v1/rerank": ("POST", e.rerank),
            "/rerank": ("POST", e.rerank),
            "/v2/rerank": ("POST", e.rerank),
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.keepalive_s)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return
                except asyncio.LimitOverrunError:
                    writer.write(_json_response(*_error(413, "headers too large"), False))
                    await writer.drain()
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(_json_response(*_error(400, "malformed request line"), False))
                    await writer.drain()
                    return
                headers = {}
                for line in lines[1:]:
                    if not line:
                        continue
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                conn = headers.get("connection", "").lower()
                keep_alive = (version == "HTTP/1.1" and conn != "close") or (
                    version == "HTTP/1.0" and conn == "keep-alive"
                )
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await self._read_chunked(reader)
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    if length > MAX_BODY:
                        writer.write(_json_response(*_error(413, "body too large"), False))
                        await writer.drain()
                        return
                    body = await reader.readexactly(length) if length else b""
                path = target.split("?", 1)[0]
                if self.engine.log_requests:
                    print(f"standin: {method} {path}", flush=True)
                await self.dispatch(method, path, body, keep_alive, writer)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:  # server shutting down with keep-alive connections open
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def dispatch(self, method: str, path: str, raw: bytes, keep_alive: bool, writer) -> None:
        engine = self.engine
        if path == "/health":
            if method not in ("GET", "HEAD"):
                writer.write(_json_response(*_error(405, "method not allowed"), keep_alive))
            elif engine.booted:
                writer.write(_response(200, b"", keep_alive))
            else:
                writer.write(_json_response(*_error(503, "engine is starting", "ServiceUnavailable"), keep_alive))
            await writer.drain()
            return
        route = self.routes.get(path)
        if route is None:
            writer.write(_json_response(*_error(404, f"no route for {path}", "NotFoundError"), keep_alive))
            await writer.drain()
            return
        want, handler = route
        if method != want:
            writer.write(_json_response(*_error(405, f"{path} expects {want}", "MethodNotAllowed"), keep_alive))
            await writer.drain()
            return
        if not engine.booted:
            writer.write(_json_response(*_error(503, "engine is starting", "ServiceUnavailable"), keep_alive))
            await writer.drain()
            return
        body = {}
        if want == "POST":
            try:
                body = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError) as exc:
                writer.write(_json_response(*_error(400, f"invalid JSON body: {exc}"), keep_alive))
                await writer.drain()
                return
            if not isinstance(body, dict):
                writer.write(_json_response(*_error(400, "the JSON body must be an object"), keep_alive))
                await writer.drain()
                return
        if engine.delay > 0 and want == "POST":
            await asyncio.sleep(engine.delay)
        try:
            status, payload = handler(body)
        except BadRequest as exc:
            writer.write(_json_response(*_error(400, str(exc)), keep_alive))
            await writer.drain()
            return
        if status != "stream":
            writer.write(_json_response(status, payload, keep_alive))
            await writer.drain()
            return
        writer.write(
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                f"transfer-encoding: chunked\r\nconnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            ).encode("latin-1")
        )
        gap = self.engine.cfg.get("stream_gap_ms", 0) / 1000.0
        for i, event in enumerate(payload):
            if gap and i:
                await asyncio.sleep(gap)  # a generation in progress: the stream is open for a while
            data = b"data: " + json.dumps(event, separators=(",", ":")).encode("utf-8") + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()


async def amain(cfg: dict) -> None:
    engine = Engine(cfg)
    server = Server(engine)
    srv = await asyncio.start_server(
        server.handle, cfg["host"], cfg["port"], limit=MAX_HEADER, reuse_address=True, backlog=1024
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if os.environ.get("STANDIN_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(
        f"standin engine serving {engine.name!r} on http://{cfg['host']}:{cfg['port']} (pid {os.getpid()})", flush=True
    )
    await stop.wait()
    # No wait_closed(): keep-alive clients must not delay the shutdown.
    srv.close()
    print("standin engine: shutting down", flush=True)


def report() -> None:
    reads = {}
    paths = os.environ.get("STANDIN_REPORT_READ", "") + ":" + bytes.fromhex(
        os.environ.get("STANDIN_REPORT_READ_HEX", "")).decode()
    for path in filter(None, paths.split(":")):
        try:
            with open(path, "rb") as fh:
                reads[path] = f"read {len(fh.read())} bytes"
        except OSError as exc:
            reads[path] = f"error: {exc.strerror}"
    payload = {"environ": dict(os.environ), "uid": os.getuid(), "cwd": os.getcwd(), "reads": reads}
    print("standin-report: " + json.dumps(payload, sort_keys=True), flush=True)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    if os.environ.get("STANDIN_REPORT") == "1":
        report()
    try:
        asyncio.run(amain(cfg))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
