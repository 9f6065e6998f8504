"""The data plane: `/endpoint/{project}/{workload}/v1/...`, a raw ASGI app (no framework).

Per request: parse the path → authenticate the `ik_live_` key (cached) → resolve the workload and
its ready replicas (cached route table) → check the route against the task type and `model` →
pick the least-busy replica → forward over a shared keep-alive pool (`gateway.upstream`) → pass the
response back (SSE chunk by chunk, never buffered; usage-only frames dropped unless the client
asked for them with `stream_options.include_usage`).

A failure before the engine's first byte (connect error, reset, 502/503 with no body sent to the
client yet) is retried once on another ready replica (the same one if it is the only one).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from django.conf import settings

from inferencekey_web.lib import credentials

from . import adapters, metrics, wake
from .balancer import Balancer
from .cache import LoadingCache
from .directory import KeyInfo, Route, Target, load_key, load_route
from .upstream import Response, UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger(__name__)

PREFIX = "/endpoint/"
RETRY_AFTER_S = 5
WATCH_AFTER_S = 0.5  # start watching for client disconnects once an exchange lasts this long
_JSON = b"application/json"
# Engine answers retried once elsewhere (before anything was sent to the client). Transport
# failures before the first response byte are retried too; a read timeout is not: the engine may
# be busy with the request, and a retry would double the load.
_RETRYABLE_STATUS = (502, 503)
_WRONG_TYPE_PREFIXES = (credentials.SDK_PREFIX, credentials.WORKER_PREFIX, credentials.JOIN_PREFIX)


def _setting(name: str, default):
    return getattr(settings, name, default)


class GatewayError(Exception):
    """An error answered by the gateway itself, before any response byte was sent."""

    def __init__(self, status: int, error: str, code: str | None = None, *, detail: str | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.code = code
        self.detail = detail
        self.headers = headers or []

    def body(self) -> bytes:
        payload = {"error": self.error}
        if self.code:
            payload["code"] = self.code
        if self.detail:
            payload["detail"] = self.detail
        return json.dumps(payload, separators=(",", ":")).encode()


class _ClientGone(Exception):
    pass


async def send_bytes(send, status: int, body: bytes, content_type: bytes = _JSON,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        head.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class GatewayApp:
    def __init__(self) -> None:
        ttl = float(_setting("GATEWAY_CACHE_TTL_S", 1.0))
        self.max_body = int(_setting("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024))
        self.body_caps: dict[str, int] = dict(_setting("GATEWAY_MAX_BODY_BYTES_BY_ROUTE", {}))
        self.max_buffered_response = int(_setting("GATEWAY_MAX_BUFFERED_RESPONSE_BYTES", 16 * 1024 * 1024))
        self.body_idle_timeout = float(_setting("REQUEST_BODY_IDLE_TIMEOUT_S", 30.0))
        self.keys = LoadingCache(load_key, ttl=ttl, name="gateway keys")
        self.routes = LoadingCache(load_route, ttl=ttl, name="gateway routes")
        self.balancer = Balancer()
        self.holder = wake.Holder(load_route, self.routes.put, float(_setting("COLD_START_HOLD_S", 600.0)))
        self.publisher = wake.DemandPublisher()
        self.pool: UpstreamPool | None = None
        self._pool_loop = None

    # ------------------------------------------------------------------ lifecycle

    def _new_pool(self) -> UpstreamPool:
        return UpstreamPool(
            connect_timeout=float(_setting("GATEWAY_CONNECT_TIMEOUT_S", 5.0)),
            # Request sent, no response head after this long → 504 (an engine that accepted and hangs).
            first_byte_timeout=float(_setting("GATEWAY_FIRST_BYTE_TIMEOUT_S", 120.0)),
            read_timeout=float(_setting("GATEWAY_READ_TIMEOUT_S", 600.0)),  # silent this long mid-body → 504
            max_idle_per_host=int(_setting("GATEWAY_MAX_IDLE_PER_ENGINE", 256)),
        )

    async def startup(self) -> None:
        if self.pool is None:
            self.pool = self._new_pool()
            self._pool_loop = asyncio.get_running_loop()
        self.publisher.ensure_running()

    async def shutdown(self) -> None:
        self.publisher.stop()
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.aclose()

    def _upstream(self) -> UpstreamPool:
        # Created lazily when no lifespan ran (e.g. an in-process test transport), and per event
        # loop: connections belong to the loop that opened them.
        if self.pool is None or self._pool_loop is not asyncio.get_running_loop():
            self.pool = self._new_pool()
            self._pool_loop = asyncio.get_running_loop()
            self.publisher.ensure_running()  # demand publishing, on the same loop (no per-request check)
        return self.pool

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # pragma: no cover - defensive
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.lifespan(receive, send)
            return
        if kind != "http":
            return  # websockets: not served here; returning closes the connection
        try:
            await self.handle(scope, receive, send)
        except GatewayError as exc:
            await send_bytes(send, exc.status, exc.body(), headers=exc.headers)
        except _ClientGone:
            pass

    async def handle(self, scope, receive, send) -> None:
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):]
        parts = path[len(PREFIX):].split("/", 2) if path.startswith(PREFIX) else []
        if len(parts) < 3 or not parts[0] or not parts[1]:
            raise GatewayError(404, "not found: expected /endpoint/{project}/{workload}/v1/...", "not_found")
        project, workload, rest = parts
        spec = adapters.PATHS.get(rest.rstrip("/"))
        if spec is None:
            raise GatewayError(404, f"no route /{rest} on this endpoint", "not_found")
        method, route_name = spec
        if scope["method"] != method:
            raise GatewayError(405, f"/{rest} expects {method}", "method_not_allowed", headers=[(b"allow", method.encode())])
        body_cap = self.body_caps.get(route_name, self.max_body)
        _check_content_length(scope, body_cap, rest)  # before anything is read or looked up

        key = await self._authenticate(scope)
        if not key.in_project(project):
            raise GatewayError(403, "project_scope_mismatch",
                               detail=f"this key does not belong to project '{project}'")
        route: Route | None = await self._route(key.project_id, workload)
        if route is None:
            raise GatewayError(404, f"workload '{workload}' not found in project '{project}'", "workload_not_found")
        if not key.covers(route.workload_id):
            raise GatewayError(403, "project_scope_mismatch",
                               detail=f"this key is not valid for workload '{route.slug}'")

        if route_name == "models":
            await send_bytes(send, 200, self._models_body(route))
            return
        problem = adapters.task_mismatch_message(route_name, route.task_type, route.slug)
        if problem:
            raise GatewayError(400, problem, "route_not_supported")

        raw = await self._read_body(receive, body_cap, rest)
        try:
            prepared = adapters.prepare_request(route_name, raw, slug=route.slug, model_name=route.model_name)
        except adapters.RequestError as exc:
            raise GatewayError(exc.status, exc.message, exc.code) from None

        wid = route.workload_id
        metrics.request_started(wid)
        if route.autoscaling:
            self.publisher.routes[wid] = route  # for the publisher's scale-up trigger
        target = self.balancer.pick(route)
        if target is None:
            # No ready replica (scaled to zero, starting): hold the request until one is ready.
            try:
                route = await self._hold(route, (key.project_id, workload), receive)
            except wake.HoldRefused as exc:
                metrics.request_failed(wid)
                if exc.error == "no_ready_replica":
                    raise GatewayError(503, exc.detail, exc.error,
                                       headers=[(b"retry-after", str(RETRY_AFTER_S).encode())]) from None
                retry = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else []
                raise GatewayError(exc.status, exc.error, detail=exc.detail, headers=retry) from None
            target = self.balancer.pick(route)
        metrics.inflight_add(wid, 1)
        try:
            ok = await self._proxy(scope, receive, send, route, route_name, target, prepared)
        except GatewayError as exc:
            if exc.status >= 500:
                metrics.request_failed(wid)
            raise
        except Exception:
            metrics.request_failed(wid)
            raise
        finally:
            metrics.inflight_add(wid, -1)
        if not ok:
            metrics.request_failed(wid)

    # ------------------------------------------------------------------ steps

    async def _hold(self, route: Route, cache_key: tuple, receive) -> Route:
        """Hold for a ready replica; a client that hangs up meanwhile stops being held (and counted)."""
        self.publisher.ensure_running()  # held requests are demand (a rare path: checked here)
        held = asyncio.ensure_future(self.holder.wait(route, cache_key))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((held, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not held.done():
                held.cancel()
        if held.cancelled() or not held.done():
            raise _ClientGone()
        return held.result()

    async def _authenticate(self, scope) -> KeyInfo:
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
                break
            if name == b"x-api-key" and token is None:
                token = value.decode("latin-1").strip() or None
        if not token:
            raise GatewayError(401, "invalid_api_key",
                               detail="missing API key: send 'Authorization: Bearer ik_live_...'")
        if token.startswith(_WRONG_TYPE_PREFIXES):
            raise GatewayError(403, "wrong_credential_type",
                               detail="the data plane takes an ik_live_ data key, not a control-plane or worker credential")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        try:
            key = await self.keys.get(digest, token)
        except Exception as exc:
            log.exception("gateway: key lookup failed")
            raise GatewayError(503, "gateway could not check the API key", "gateway_unavailable",
                               headers=[(b"retry-after", b"1")]) from exc
        if key is None or (key.expires_at is not None and time.time() >= key.expires_at):
            raise GatewayError(401, "invalid_api_key", detail="unknown, revoked or expired API key")
        return key

    async def _route(self, project_id: str, workload: str) -> Route | None:
        try:
            return await self.routes.get((project_id, workload), project_id, workload)
        except Exception as exc:
            log.exception("gateway: route lookup failed")
            raise GatewayError(503, "gateway could not load the workload's routes", "gateway_unavailable",
                               headers=[(b"retry-after", b"1")]) from exc

    async def _read_body(self, receive, cap: int, rest: str) -> bytes:
        """The request body, refused with 413 as soon as it grows past the route's cap (chunked
        bodies carry no content-length to check up front), and with 408 when a piece of it does
        not come within body_idle_timeout (a client trickling its body holds the request open)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(self.body_idle_timeout):
                    message = await receive()
            except TimeoutError:
                raise GatewayError(408, f"request body not received: nothing came for {self.body_idle_timeout:g} s",
                                   "body_timeout", headers=[(b"connection", b"close")]) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                raise _too_large(cap, rest)
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _models_body(route: Route) -> bytes:
        return json.dumps({
            "object": "list",
            "data": [{"id": route.slug, "object": "model", "created": 0, "owned_by": "inferencekey",
                      "root": route.model_name, "task_type": route.task_type}],
        }, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ proxy

    async def _proxy(self, scope, receive, send, route: Route, route_name: str, target: Target,
                     prepared: adapters.Prepared) -> bool:
        """Forward and answer. Returns False when the outcome counts as an error of the workload."""
        headers = [(b"content-type", b"application/json")]
        for name, value in scope["headers"]:
            if name == b"accept":
                headers.append((b"accept", value))
                break
        main = asyncio.current_task()
        watch = _DisconnectWatch(send, receive, main)
        # Watching for a client disconnect costs a task per request; short exchanges finish before
        # it would matter, so the watch starts only once the exchange has lasted WATCH_AFTER_S.
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch.start)
        try:
            return await self._exchange(watch.send, route, route_name, target, prepared, headers)
        except asyncio.CancelledError:
            if watch.fired:
                # The client went away: reading from the engine stopped and its connection was
                # closed (which lets vLLM abort the generation). Nothing can be sent any more.
                main.uncancel()
                return True
            raise
        finally:
            timer.cancel()
            watch.stop()

    async def _exchange(self, send, route: Route, route_name: str, target: Target,
                        prepared: adapters.Prepared, headers: list[tuple[bytes, bytes]]) -> bool:
        pool = self._upstream()
        path = adapters.UPSTREAM_PATH[route_name]
        for attempt in (1, 2):
            rid = target.replica_id
            metrics.replica_add(rid, 1)
            response = None
            try:
                try:
                    response = await pool.request(target.host, target.port, b"POST", target.api_base + path,
                                                  prepared.body, headers)
                except UpstreamError as exc:
                    if exc.before_response:
                        self.balancer.mark_unreachable(rid)
                        if attempt == 1:
                            log.info("gateway: %s replica %s unreachable (%s), retrying", route.slug, rid, exc)
                            target = self.balancer.pick(route, avoid=rid) or target
                            continue
                        raise GatewayError(502, f"workload {route.slug}: could not reach the engine ({exc})",
                                           "engine_unreachable") from None
                    if isinstance(exc, UpstreamTimeout):
                        raise GatewayError(504, f"workload {route.slug}: {exc}", "engine_timeout") from None
                    raise GatewayError(502, f"workload {route.slug}: bad answer from the engine ({exc})",
                                       "engine_error") from None
                if response.status in _RETRYABLE_STATUS and attempt == 1:
                    log.info("gateway: %s replica %s answered %s, retrying", route.slug, rid, response.status)
                    target = self.balancer.pick(route, avoid=rid) or target
                    continue
                return await self._relay(send, route, route_name, target, prepared, response)
            finally:
                metrics.replica_add(rid, -1)
                if response is not None:
                    response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _relay(self, send, route: Route, route_name: str, target: Target, prepared: adapters.Prepared,
                     response: Response) -> bool:
        status = response.status
        replica_header = (b"x-inferencekey-replica", target.replica_id.encode())
        if status >= 400:
            try:
                raw = await _read_limited(response, 1024 * 1024)
            except UpstreamError:
                raw = b""
            await send_bytes(send, status, adapters.error_body(status, raw), headers=[replica_header])
            return status < 500
        content_type = response.header(b"content-type", _JSON)
        if prepared.stream or route_name == "completions":
            # Streamed through as it arrives: SSE frames are cut at boundaries only to drop usage-only
            # chunks (which the SDK cannot parse); anything else is passed byte for byte. A client that
            # asked for `stream_options.include_usage` gets the engine's stream untouched.
            is_sse = content_type.startswith(b"text/event-stream")
            sse = adapters.SSEFilter() if is_sse and not prepared.include_usage else None
            headers = [(b"content-type", content_type), replica_header]
            if is_sse:
                headers.append((b"cache-control", b"no-cache"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            try:
                async for chunk in response.iter_raw():
                    if sse is not None:
                        chunk = sse.feed(chunk)
                        if not chunk:
                            continue
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                # Mid-stream failure: the only signal left is to drop the client's connection.
                log.warning("gateway: %s stream from %s broke: %s", route.slug, target.replica_id, exc)
                raise
            tail = sse.flush() if sse is not None else b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return True
        # A non-streamed answer is read whole only up to max_buffered_response (it may need shaping);
        # past that it is streamed through with bounded buffers when it needs no shaping, else 502.
        cap = self.max_buffered_response
        parts: list[bytes] = []
        size = 0
        chunks = response.iter_raw()
        try:
            async for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > cap:
                    break
        except UpstreamTimeout as exc:
            raise GatewayError(504, f"workload {route.slug}: {exc}", "engine_timeout") from None
        except UpstreamError as exc:
            raise GatewayError(502, f"workload {route.slug}: bad answer from the engine ({exc})", "engine_error") from None
        head = parts[0] if len(parts) == 1 else b"".join(parts)
        if size <= cap:
            body = adapters.shape_response(route_name, head, slug=route.slug, top_n=prepared.top_n)
            await send_bytes(send, status, body, headers=[replica_header])
            return True
        if adapters.needs_parsing(route_name, head):
            raise GatewayError(502, f"workload {route.slug}: the engine's answer is larger than the gateway's "
                                    f"{cap} byte limit for answers it must reshape (GATEWAY_MAX_BUFFERED_RESPONSE_BYTES)",
                               "engine_response_too_large")
        headers = [(b"content-type", content_type), replica_header]
        length = response.header(b"content-length")
        if length is not None:
            headers.append((b"content-length", length))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        del parts, head
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            log.warning("gateway: %s answer from %s broke: %s", route.slug, target.replica_id, exc)
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


def _too_large(cap: int, rest: str) -> GatewayError:
    size = f"{cap // (1024 * 1024)} MiB" if cap % (1024 * 1024) == 0 else f"{cap} bytes"
    return GatewayError(413, f"request body too large: /{rest} accepts at most {size} ({cap} bytes)", "body_too_large",
                        headers=[(b"connection", b"close")])


def _check_content_length(scope, cap: int, rest: str) -> None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise GatewayError(400, "bad content-length", "invalid_request") from None
            if length > cap:
                raise _too_large(cap, rest)
            return


async def _disconnected(receive) -> None:
    """Returns when the client has gone (the body was read already: nothing else can arrive)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_limited(response: Response, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in response.iter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


class _DisconnectWatch:
    """Cancels the request's task when the client disconnects before the response is complete."""

    __slots__ = ("_send", "_receive", "_main", "complete", "fired", "task")

    def __init__(self, send, receive, main: asyncio.Task) -> None:
        self._send = send
        self._receive = receive
        self._main = main
        self.complete = False
        self.fired = False
        self.task: asyncio.Task | None = None

    async def send(self, message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True  # from here on a disconnect is the normal end of the exchange
        await self._send(message)

    def start(self) -> None:
        if not self.complete and self.task is None:
            self.task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.complete:
                    self.fired = True
                    self._main.cancel()
                return
