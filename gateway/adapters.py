"""Per-route request and response shaping between the OpenAI-style public API and the engine.

Everything here is pure (bytes/dicts in, bytes/dicts out) so it is cheap to test and to reason
about. The rules come from the SDK wire contract (shared/contract/SDK_WIRE.md §5):

* chat and embeddings responses need a string `model` (filled with the workload slug);
* rerank results are sorted best-first by `relevance_score` (fallback `score`), `top_n` applied;
* SSE: JSON frames whose `choices` is missing or empty (usage-only chunks) are dropped (the SDK
  raises on them), unless the client asked for them with `stream_options.include_usage`;
* errors are `{"error": "<string>", ...}` bodies.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

# Which public routes each task type serves. Engines for these task types speak the OpenAI shapes
# (vLLM, sglang, llama.cpp, ollama). Only combinations no engine can serve are refused:
# a generative model has no embeddings or rerank, a pooling model cannot chat; a bi-encoder
# (embedding) model can rerank in vLLM (cosine score), a cross-encoder (reranker) cannot embed.
ROUTES_BY_TASK: dict[str, frozenset[str]] = {
    "text2text": frozenset({"chat", "completions"}),
    "omni": frozenset({"chat", "completions"}),
    "embedding": frozenset({"embeddings", "rerank"}),
    "reranker": frozenset({"rerank"}),
}

# (method, path after /endpoint/{project}/{workload}/) -> route name
PATHS: dict[str, tuple[str, str]] = {
    "v1/chat/completions": ("POST", "chat"),
    "v1/completions": ("POST", "completions"),
    "v1/embeddings": ("POST", "embeddings"),
    "v1/rerank": ("POST", "rerank"),
    "v1/models": ("GET", "models"),
}

# Path on the engine, relative to its api_base ("/v1").
UPSTREAM_PATH = {
    "chat": b"/chat/completions",
    "completions": b"/completions",
    "embeddings": b"/embeddings",
    "rerank": b"/rerank",
}

ACCEPTED_MODEL_ALIASES = ("default",)


class RequestError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _dumps(obj) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (`"\ud800"` is valid JSON) has no UTF-8 form: escape it as the client did.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def task_mismatch_message(route: str, task_type: str, slug: str) -> str | None:
    allowed = ROUTES_BY_TASK.get(task_type)
    if allowed is None:
        return (
            f"workload {slug} has task_type '{task_type}', which this endpoint does not serve through "
            f"the OpenAI-compatible routes"
        )
    if route in allowed:
        return None
    names = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings",
             "rerank": "/v1/rerank"}
    served = ", ".join(names[r] for r in ("chat", "completions", "embeddings", "rerank") if r in allowed)
    return f"workload {slug} is a {task_type} workload: {names[route]} is not available (it serves {served})"


@dataclass(slots=True)
class Prepared:
    body: bytes  # what goes to the engine
    stream: bool
    top_n: int | None  # rerank only
    include_usage: bool = False  # `stream_options.include_usage`: the client wants the usage-only chunk


def prepare_request(route: str, raw: bytes, *, slug: str, model_name: str) -> Prepared:
    """Validate the client's JSON body, check and rewrite `model`. Raises RequestError (400)."""
    try:
        body = json.loads(raw) if raw else None
    except RecursionError:
        raise RequestError(400, "request body is nested too deeply to be JSON this endpoint accepts",
                           "invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if model is None or model == slug or model in ACCEPTED_MODEL_ALIASES:
        out = _swap_model(raw, model, model_name)
        if out is None:
            body["model"] = model_name
            out = _dumps(body)
    elif model == model_name:
        out = raw  # already what the engine serves: forward the client's bytes untouched
    else:
        raise RequestError(400, f"Model '{model}' is not available on this endpoint", "model_not_available")
    top_n = None
    if route == "rerank":
        top_n = body.get("top_n")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)):
            raise RequestError(400, "top_n must be an integer", "invalid_request")
    stream = route in ("chat", "completions") and body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return Prepared(out, stream, top_n, include_usage)


def _swap_model(raw: bytes, model, model_name: str) -> bytes | None:
    """Replace the top-level `"model": "<model>"` in the client's bytes, or None if unsure.

    Inside JSON strings quotes are escaped, so an unescaped `"model":"x"` is always a key/value
    pair; when exactly one exists and the parsed body's top-level model is "x", it is that one.
    Cheaper than re-serialising the body (and keeps the client's bytes otherwise untouched).
    """
    if not isinstance(model, str):
        return None
    value = json.dumps(model, ensure_ascii=False).encode()
    compact, spaced = b'"model":' + value, b'"model": ' + value
    n_compact, n_spaced = raw.count(compact), raw.count(spaced)
    if n_compact + n_spaced != 1:
        return None
    old = compact if n_compact else spaced
    return raw.replace(old, b'"model":' + json.dumps(model_name, ensure_ascii=False).encode(), 1)


# ----------------------------------------------------------------------------- responses

_MODEL_STRING = re.compile(rb'"model"\s*:\s*"')


def shape_response(route: str, raw: bytes, *, slug: str, top_n: int | None) -> bytes:
    """Make a successful, non-streamed engine response satisfy the SDK contract."""
    if route == "completions":
        return raw
    if route != "rerank" and _MODEL_STRING.search(raw):
        # An unescaped `"model":"` can only be a key with a string value, and chat/embeddings
        # responses nest no other "model" key: the engine did set it. Skip parsing (for embedding
        # batches that is megabytes of floats).
        return raw
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw  # not ours to fix; the SDK will report it
    if not isinstance(body, dict):
        return raw
    changed = False
    if not isinstance(body.get("model"), str):
        body["model"] = slug
        changed = True
    if route == "rerank":
        results = body.get("results")
        if isinstance(results, list):
            results.sort(key=_score, reverse=True)  # stable: equal scores keep engine order
            if top_n is not None and 0 < top_n < len(results):
                del results[top_n:]
            changed = True
    return _dumps(body) if changed else raw


def needs_parsing(route: str, head: bytes) -> bool:
    """Whether `shape_response` must parse a response starting with `head` (otherwise the body can
    be streamed through untouched): rerank is always sorted; chat and embeddings only lack a model
    when no `"model": "…"` appears (engines put it before the payload)."""
    if route == "completions":
        return False
    return route == "rerank" or not _MODEL_STRING.search(head)


def _score(item) -> float:
    if isinstance(item, dict):
        for name in ("relevance_score", "score"):
            value = item.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return float("-inf")


def error_body(status: int, raw: bytes) -> bytes:
    """An engine's error response as `{"error": "<string>", "code": ...}` (the SDK shows `error`)."""
    message = None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, str):
            return raw if raw.strip() else _dumps({"error": err})
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]  # OpenAI / sglang shape
        elif isinstance(body.get("message"), str):
            message = body["message"]  # vLLM's {"object": "error", "message": ...}
        elif isinstance(body.get("detail"), str):
            message = body["detail"]  # FastAPI default
    if message is None:
        text = raw.decode("utf-8", "replace").strip()
        message = text[:2000] if text else f"engine answered {status}"
    return _dumps({"error": message, "code": "engine_error"})


# ----------------------------------------------------------------------------- SSE

_FRAME = re.compile(rb".*?(?:\r\n\r\n|\n\n|\r\r)", re.DOTALL)


# A partial frame held back longer than this is passed on unfiltered (a usage-only chunk is a few
# hundred bytes): the filter's memory stays bounded whatever the engine sends.
MAX_SSE_FRAME = 1024 * 1024


class SSEFilter:
    """Cut an SSE byte stream at frame boundaries and drop usage-only JSON frames.

    Frames are passed on as soon as they are complete; partial frames wait for the next chunk, up
    to MAX_SSE_FRAME. Each byte is scanned a bounded number of times (the held-back part is known
    to hold no boundary, so only the new chunk is searched): linear in the stream, never O(n²).
    """

    __slots__ = ("_rest", "_passing", "_tail")

    def __init__(self) -> None:
        self._rest = bytearray()  # the start of an incomplete frame (no boundary inside)
        self._passing = False  # inside an oversized frame: passed through until its boundary
        self._tail = b""  # the last bytes passed through while _passing (a boundary may straddle)

    def feed(self, chunk: bytes) -> bytes:
        if self._passing:
            probe = self._tail + chunk
            end = _first_boundary(probe)
            if end < 0:
                self._tail = probe[-3:]
                return chunk
            cut = end - len(self._tail)  # > 0: a boundary ends in the new chunk
            self._passing, self._tail = False, b""
            return chunk[:cut] + self.feed(chunk[cut:]) if cut < len(chunk) else chunk
        rest = self._rest
        overlap = min(3, len(rest))  # a boundary may start in the held-back bytes
        end = _last_boundary(bytes(rest[len(rest) - overlap:]) + chunk) if overlap else _last_boundary(chunk)
        if end < 0:
            rest += chunk
            return self._pass_oversized()
        cut = end - overlap
        complete = bytes(rest) + chunk[:cut] if rest else chunk[:cut]
        self._rest = bytearray(chunk[cut:])
        return _filter_frames(complete) + self._pass_oversized()

    def _pass_oversized(self) -> bytes:
        if len(self._rest) <= MAX_SSE_FRAME:
            return b""
        out = bytes(self._rest)
        self._rest = bytearray()
        self._passing, self._tail = True, out[-3:]
        return out

    def flush(self) -> bytes:
        """What is left at end of stream (a last frame without its blank line)."""
        rest, self._rest = bytes(self._rest), bytearray()
        if not rest:
            return b""
        return _keep(rest) or b""


def _first_boundary(data: bytes) -> int:
    """Index just past the first blank line ending a frame, or -1."""
    end = -1
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = data.find(sep)
        if i >= 0 and (end < 0 or i + len(sep) < end):
            end = i + len(sep)
    return end


def _last_boundary(data: bytes) -> int:
    """Index just past the last blank line ending a frame, or -1."""
    end = -1
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = data.rfind(sep)
        if i >= 0 and i + len(sep) > end:
            end = i + len(sep)
    return end


def _filter_frames(complete: bytes) -> bytes:
    # Fast path: every frame carries a non-empty `choices` array (or is [DONE]/a comment).
    frames = _FRAME.findall(complete)
    out = []
    dropped = False
    for frame in frames:
        kept = _keep(frame)
        if kept is None:
            dropped = True
        else:
            out.append(kept)
    return b"".join(out) if dropped else complete


def _keep(frame: bytes) -> bytes | None:
    """The frame, or None when it is a JSON frame without a non-empty `choices`."""
    if b'"choices":[{' in frame or b'"choices": [{' in frame or b"data:" not in frame:
        return frame
    payload = []
    for line in frame.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            payload.append(value[1:] if value[:1] == b" " else value)
    data = b"\n".join(payload).strip()
    if not data or data == b"[DONE]":
        return frame
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return frame  # not JSON: the SDK skips it, other clients may want it
    if isinstance(obj, dict):
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
    return frame
