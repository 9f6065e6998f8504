"""The workload object on the wire (SDK_WIRE.md §4.1): always the 9 required fields, typed."""
from __future__ import annotations

import json
from datetime import datetime

from django.http import HttpResponse

from .models import Workload

LIST_COLUMNS = (
    "id", "project_id", "project__slug", "name", "slug", "description", "model_name", "backend", "task_type",
    "config", "execution_policy", "execution_policy_config", "worker_id", "gpu_resource_id",
    "created_at", "updated_at", "generation", "observed_generation", "phase", "message",
    "desired_replicas", "ready_replicas",
)


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def row_to_wire(row: dict) -> dict:
    out = dict(row)
    out["project_slug"] = out.pop("project__slug")
    out["created_at"] = _ts(row["created_at"])
    out["updated_at"] = _ts(row["updated_at"])
    return out


def workload_to_wire(workload: Workload) -> dict:
    row = {c: getattr(workload, c) for c in LIST_COLUMNS if c != "project__slug"}
    row["project__slug"] = workload.project.slug
    return row_to_wire(row)


def json_response(payload, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json")
