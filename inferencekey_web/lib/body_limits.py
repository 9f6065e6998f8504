"""Refuse request bodies over a per-route cap before Django reads them.

Django's ASGI handler reads the whole body into a spooled temporary file before any view, any
middleware, any credential check runs (`DATA_UPLOAD_MAX_MEMORY_SIZE` is only checked later, when a
view reads `request.body`): an unauthenticated 1 GB POST lands on disk. This ASGI wrapper answers
413 from `Content-Length` before a byte is read, and counts chunked bodies as they arrive,
answering 413 (and ending the request for Django) as soon as one passes its route's cap. A body
whose next piece does not come within REQUEST_BODY_IDLE_TIMEOUT_S is answered 408 the same way.
"""
from __future__ import annotations

import asyncio
import json

from django.conf import settings


def limit_for(path: str) -> int:
    """The cap of the first matching prefix in REQUEST_BODY_LIMITS, else DATA_UPLOAD_MAX_MEMORY_SIZE."""
    for prefix, limit in getattr(settings, "REQUEST_BODY_LIMITS", ()):
        if path.startswith(prefix):
            return limit
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440


def _describe(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


async def _refuse(send, path: str, limit: int, status: int = 413, message: str = "") -> None:
    message = message or f"request body too large: {path} accepts at most {_describe(limit)} ({limit} bytes)"
    if path.startswith("/api/"):
        body, kind = json.dumps({"error": message, "code": "body_too_large"}).encode(), b"application/json"
    else:
        body, kind = message.encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: 413 for bodies over the route's cap, before the wrapped app reads them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root):]
        limit = limit_for(path)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False  # the server refuses a malformed length itself
                if too_large:
                    await _refuse(send, path, limit)
                    return
                break
        received = 0
        refused = False
        body_done = False
        idle = float(getattr(settings, "REQUEST_BODY_IDLE_TIMEOUT_S", 30.0))

        async def counting_receive():
            nonlocal received, refused, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: only the disconnect, whenever it comes
            try:
                # A client trickling its body holds a request open: each piece must come in time.
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                refused = True
                await _refuse(send, path, limit, 408, f"request body not received: nothing came for {idle:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    # Answer now; to the app the client is gone (Django drops the request quietly).
                    refused = True
                    await _refuse(send, path, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
