"""`GET /api/projects/{p}/workloads/{slug}/readiness-events`: the SSE stream `wait_until_ready` reads.

On connect it sends the current phase at once, then every new event, re-sending the current phase
every few seconds while waiting (the SDK checks its timeout only when an event arrives), and closes
after a terminal `ready` or `error`. Each connection restarts from the current phase (the SDK sends
no Last-Event-ID).

Database use: a stream holds no connection while it waits. Authorization returns its connection at
once, and one poller per process (`workloads/notifier.py`) watches every open stream's workload and
wakes the streams whose workload moved. Streams are capped per SDK token
(READINESS_MAX_STREAMS_PER_TOKEN, 429 past it) and end when the client goes away (Django's ASGI
handler cancels the stream on disconnect; the `finally` below lets go of its watch).
"""
from __future__ import annotations

import json
import threading
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.http import HttpResponse, StreamingHttpResponse

from accounts.auth import project_for, require_scope, sdk_token_from
from accounts.models import SdkScope
from inferencekey_web.lib.api_errors import ApiError, not_found

from . import notifier
from .models import Phase, ReadinessEvent, Workload

RESEND_S = 5.0
MAX_STREAM_S = 300.0  # the SDK reconnects on a clean close; bounded streams free workers


def _authorize(request, project: str, slug: str) -> tuple[str, str]:
    """(workload id, SDK token id). Returns its connection at once: the stream may last minutes."""
    try:
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_READ)
        proj = project_for(token, project)
        workload_id = Workload.objects.filter(project=proj, slug=slug).values_list("id", flat=True).first()
        if workload_id is None:
            raise not_found(f"workload {slug!r} not found in project {proj.slug!r}")
        return workload_id, token.pk
    finally:
        if not connection.in_atomic_block:  # (a test's transaction wraps the request in some tests)
            connection.close()


def _fingerprints(workload_ids: list[str]) -> dict[str, tuple]:
    """Everything `_snapshot` reads, cheaply, for many workloads at once (two queries): the
    notifier re-takes a workload's snapshot only when its fingerprint moves. A `_snapshot` that
    reads more must add it here."""
    rows = Workload.objects.filter(pk__in=workload_ids).values_list("id", "generation", "observed_generation", "phase", "message")
    last = dict(ReadinessEvent.objects.filter(workload_id__in=workload_ids).order_by().values("workload_id")
                .annotate(last=Max("id")).values_list("workload_id", "last"))
    return {row[0]: (*row[1:], last.get(row[0])) for row in rows}


def _notifier() -> notifier.Notifier:
    return notifier.for_running_loop(_fingerprints, lambda wid: _snapshot(wid, 0))


def _since(snapshot, after_id: int):
    """The snapshot's events newer than `after_id` (the notifier keeps all of the generation's)."""
    current, events = snapshot
    return current, [e for e in events if e["id"] > after_id]


def _snapshot(workload_id: str, after_id: int):
    """(current phase dict or None if deleted, new events since after_id)."""
    row = Workload.objects.filter(pk=workload_id).values("generation", "observed_generation", "phase", "message").first()
    if row is None:
        return None, []
    events = list(ReadinessEvent.objects.filter(workload_id=workload_id, id__gt=after_id, generation=row["generation"])
                  .order_by("id").values("id", "phase", "step", "message"))
    if row["observed_generation"] < row["generation"]:
        current = {"phase": Phase.SCHEDULING.value, "step": "reconcile", "message": "Reconciling the latest spec"}
    else:
        current = {"phase": row["phase"], "step": events[-1]["step"] if events else "", "message": row["message"] or row["phase"]}
    return current, events


def _frame(event: dict, started: float) -> bytes:
    payload = {"phase": event["phase"], "message": event["message"], "elapsed_ms": int((time.monotonic() - started) * 1000)}
    if event.get("step"):
        payload["step"] = event["step"]
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _terminal(phase: str) -> bool:
    return phase in (Phase.READY, Phase.ERROR)


async def stream(workload_id: str):
    started = time.monotonic()
    poller = _notifier()
    watch = poller.watch(workload_id)
    try:
        current, events = _since(await watch.next(), 0)
        if current is None:
            yield _frame({"phase": "error", "message": "the workload was deleted"}, started)
            return
        last_id = events[-1]["id"] if events else 0
        yield _frame(current, started)
        last_sent = time.monotonic()
        if _terminal(current["phase"]):
            return
        while time.monotonic() - started < MAX_STREAM_S:
            wait = max(0.0, min(RESEND_S - (time.monotonic() - last_sent), MAX_STREAM_S - (time.monotonic() - started)))
            current, events = _since(await watch.next(timeout=wait), last_id)
            if current is None:
                yield _frame({"phase": "error", "message": "the workload was deleted"}, started)
                return
            for event in events:
                last_id = event["id"]
                if not _terminal(event["phase"]):
                    yield _frame(event, started)
                    last_sent = time.monotonic()
            if _terminal(current["phase"]):
                yield _frame(current, started)
                return
            if time.monotonic() - last_sent >= RESEND_S:
                yield _frame(current, started)
                last_sent = time.monotonic()
    finally:
        poller.unwatch(watch)  # also on disconnect: Django cancels the stream and closes it


# Open streams per SDK token, in this process (the cap bounds what one token can hold open here).
_OPEN: dict[str, int] = {}
_OPEN_LOCK = threading.Lock()


def _acquire(token_id: str) -> bool:
    with _OPEN_LOCK:
        if _OPEN.get(token_id, 0) >= settings.READINESS_MAX_STREAMS_PER_TOKEN:
            return False
        _OPEN[token_id] = _OPEN.get(token_id, 0) + 1
        return True


def _release(token_id: str) -> None:
    with _OPEN_LOCK:
        left = _OPEN.get(token_id, 0) - 1
        if left > 0:
            _OPEN[token_id] = left
        else:
            _OPEN.pop(token_id, None)


class _StreamResponse(StreamingHttpResponse):
    """Releases the token's stream slot when Django closes the response (end, error or disconnect)."""

    def __init__(self, content, token_id: str, **kwargs):
        super().__init__(content, **kwargs)
        self._token_id = token_id

    def close(self):
        token_id, self._token_id = self._token_id, None
        if token_id is not None:
            _release(token_id)
        super().close()


async def readiness_events(request, project: str, slug: str):
    try:
        workload_id, token_id = await sync_to_async(_authorize)(request, project, slug)
    except ApiError as exc:
        return HttpResponse(json.dumps(exc.body), status=exc.status_code, content_type="application/json")
    if not _acquire(token_id):
        limit = settings.READINESS_MAX_STREAMS_PER_TOKEN
        body = {"error": f"too many open readiness streams for this token (at most {limit}); close one or retry later",
                "code": "too_many_streams"}
        response = HttpResponse(json.dumps(body), status=429, content_type="application/json")
        response["Retry-After"] = "5"
        return response
    response = _StreamResponse(stream(workload_id), token_id, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
