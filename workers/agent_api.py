"""The agent protocol (workers/agent/PROTOCOL.md): register with a join token, then heartbeat."""
from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from inferencekey_web.lib import json_input, tasks

from . import services


def _json(payload, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _body(request) -> tuple[dict | None, str]:
    """The JSON object of the body, or (None, a message naming the problem) for a 400."""
    try:
        data = json_input.loads(request.body or b"{}")
    except json_input.JsonInputError as exc:
        return None, str(exc)
    if not isinstance(data, dict):
        return None, "body must be a JSON object"
    return data, ""


def _worker_and_body(request):
    """(worker, body) for a request with a worker credential, or (None, the 401/400 answer)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    worker = services.worker_for_credential(header.removeprefix("Bearer ").strip())
    if worker is None:
        return None, _json({"error": "unknown or revoked worker credential"}, 401)
    data, problem = _body(request)
    if data is None:
        return None, _json({"error": problem}, 400)
    return worker, data


@csrf_exempt
@require_POST
def register(request):
    data, problem = _body(request)
    if data is None:
        return _json({"error": problem}, 400)
    if not isinstance(data.get("join_token"), str):
        return _json({"error": "join_token: required"}, 400)
    if problem := services.report_problem(data):
        return _json({"error": problem}, 400)
    try:
        worker, credential = services.worker_register(join_token=data["join_token"], payload=data)
    except services.RegistrationRefused as exc:
        return _json({"error": str(exc)}, 401)
    return _json({"worker_id": worker.id, "worker_token": credential,
                  "heartbeat_interval_s": settings.HEARTBEAT_INTERVAL_S}, 201)


@csrf_exempt
@require_POST
def heartbeat(request):
    worker, data = _worker_and_body(request)
    if worker is None:
        return data
    if problem := services.report_problem(data):
        return _json({"error": problem}, 400)
    desired, changed = services.worker_heartbeat(worker=worker, payload=data)
    for workload_id in changed:
        # By task name: workers must not import workloads (imports point one way).
        # A broker that is down must not fail the heartbeat: the sweep re-queues lagging workloads.
        tasks.send_on_commit("workloads.tasks.reconcile_workload", [workload_id])
    worker.refresh_from_db(fields=["state"])
    # A removed replica may still be in a gateway's cached route table for GATEWAY_CACHE_TTL_S: the
    # agent keeps its engine serving that long (plus a margin) before draining it.
    drain_grace = float(getattr(settings, "GATEWAY_CACHE_TTL_S", 1.0)) + 1.0
    return _json({"heartbeat_interval_s": settings.HEARTBEAT_INTERVAL_S, "state": worker.state, "replicas": desired,
                  "drain_grace_s": drain_grace})


@csrf_exempt
@require_POST
def offline(request):
    """The agent is stopping cleanly: mark the worker offline now (PROTOCOL.md §4)."""
    worker, data = _worker_and_body(request)
    if worker is None:
        return data
    engines_stopped = data.get("engines_stopped", False)
    if not isinstance(engines_stopped, bool):
        return _json({"error": "engines_stopped: must be true or false"}, 400)
    affected = services.worker_offline(worker=worker, engines_stopped=engines_stopped)
    return _json({"state": "offline", "rescheduled_workloads": len(affected)})
