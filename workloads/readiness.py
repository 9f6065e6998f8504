"""`GET /api/projects/{p}/workloads/{slug}/readiness-events`: the SSE stream `wait_until_ready` reads.

On connect it sends the current phase at once, then every new event, re-sending the current phase
every few seconds while waiting (the SDK checks its timeout only when an event arrives), and closes
after a terminal `ready` or `error`. Each connection restarts from the current phase (the SDK sends
no Last-Event-ID).
"""
from __future__ import annotations

import asyncio
import json
import time

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from accounts.auth import project_for, require_scope, sdk_token_from
from accounts.models import SdkScope
from inferencekey_web.lib.api_errors import ApiError, not_found

from .models import Phase, ReadinessEvent, Workload

POLL_S = 0.1
RESEND_S = 5.0
MAX_STREAM_S = 300.0  # the SDK reconnects on a clean close; bounded streams free workers


def _authorize(request, project: str, slug: str) -> str:
    token = sdk_token_from(request)
    require_scope(token, SdkScope.WORKLOAD_READ)
    proj = project_for(token, project)
    workload_id = Workload.objects.filter(project=proj, slug=slug).values_list("id", flat=True).first()
    if workload_id is None:
        raise not_found(f"workload {slug!r} not found in project {proj.slug!r}")
    return workload_id


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
    snapshot = sync_to_async(_snapshot, thread_sensitive=False)
    current, events = await snapshot(workload_id, 0)
    if current is None:
        yield _frame({"phase": "error", "message": "the workload was deleted"}, started)
        return
    last_id = events[-1]["id"] if events else 0
    yield _frame(current, started)
    last_sent = time.monotonic()
    if _terminal(current["phase"]):
        return
    while time.monotonic() - started < MAX_STREAM_S:
        await asyncio.sleep(POLL_S)
        current, events = await snapshot(workload_id, last_id)
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


async def readiness_events(request, project: str, slug: str):
    try:
        workload_id = await sync_to_async(_authorize)(request, project, slug)
    except ApiError as exc:
        return StreamingHttpResponse([json.dumps(exc.body)], status=exc.status_code, content_type="application/json")
    response = StreamingHttpResponse(stream(workload_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
