"""The workload object on the wire (SDK_WIRE.md §4.1): always the 9 required fields, typed."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from django.db import connection
from django.http import HttpResponse

from inferencekey_web.lib import sealing

from .models import Workload

LIST_COLUMNS = (
    "id", "project_id", "project__slug", "name", "slug", "description", "model_name", "backend", "task_type",
    "config", "execution_policy", "execution_policy_config", "worker_id", "gpu_resource_id",
    "created_at", "updated_at", "generation", "observed_generation", "phase", "message",
    "desired_replicas", "ready_replicas",
)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


# The list is the SDK's first call on every ensure() and delete(), and it must carry every
# workload of the project. Building 1,000 objects in Python costs tens of ms (JSON decoding,
# datetimes); the database builds the array in one aggregate instead.
# The list carries the spec and identity only (status lives on GET /api/workloads/{id}): the SDK
# parses every item on every call, so each byte here is paid 1,000 times.
_TEXT = ("id", "project_id", "name", "slug", "description", "model_name", "backend", "task_type",
         "execution_policy", "worker_id", "gpu_resource_id")
_INTS = ("generation",)
_JSON = ("config", "execution_policy_config")


def _postgres_sql() -> str:
    pairs = [f"'{c}', w.{c}" for c in _TEXT + _INTS + _JSON]
    pairs.append("'project_slug', p.slug")
    for c in ("created_at", "updated_at"):
        pairs.append(f"""'{c}', to_char(w.{c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""")
    # json_build_object takes at most 100 arguments: split and merge.
    half = len(pairs) // 2
    obj = f"(jsonb_build_object({', '.join(pairs[:half])}) || jsonb_build_object({', '.join(pairs[half:])}))"
    return (f"SELECT COALESCE(json_agg({obj} ORDER BY w.created_at, w.id)::text, '[]') "
            "FROM workloads_workload w JOIN accounts_project p ON p.id = w.project_id WHERE w.project_id = %s")


def _sqlite_sql() -> str:
    pairs = [f"'{c}', w.{c}" for c in _TEXT + _INTS]
    pairs += [f"'{c}', json(w.{c})" for c in _JSON]
    pairs.append("'project_slug', p.slug")
    for c in ("created_at", "updated_at"):
        # `%%`: the SQL goes through `%` formatting (the sqlite backend turns `%%` into `%`; the
        # DEBUG cursor's last_executed_query runs `sql % params`), so a bare `%Y` is a 500 under DEBUG.
        pairs.append(f"'{c}', strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', w.{c})")
    inner = (f"SELECT json_object({', '.join(pairs)}) AS o FROM workloads_workload w "
             "JOIN accounts_project p ON p.id = w.project_id WHERE w.project_id = %s ORDER BY w.created_at, w.id")
    return f"SELECT COALESCE(json_group_array(json(o)), '[]') FROM ({inner})"


_FINGERPRINT_SQL = ("SELECT COUNT(*), MAX(updated_at), MAX(reconciled_at), MAX(created_at) "
                    "FROM workloads_workload WHERE project_id = %s")
_CACHE: OrderedDict[str, tuple[tuple, str]] = OrderedDict()
_CACHE_SIZE = 256
_CACHE_LOCK = threading.Lock()


def project_list_json(project_id: str) -> str:
    """The project's workload array, rebuilt only when a cheap fingerprint of the project's rows
    (count, newest spec change, newest reconcile) moved; otherwise served from this process's cache."""
    with connection.cursor() as cursor:  # raw SQL: the ORM's compile step costs more than the query
        cursor.execute(_FINGERPRINT_SQL, [project_id])
        fingerprint = tuple(cursor.fetchone())
    with _CACHE_LOCK:
        hit = _CACHE.get(project_id)
        if hit and hit[0] == fingerprint:
            _CACHE.move_to_end(project_id)
            return hit[1]
    body = _build_list_json(project_id)
    with _CACHE_LOCK:
        _CACHE[project_id] = (fingerprint, body)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return body


def _build_list_json(project_id: str) -> str:
    """The JSON array of every workload of the project, built by the database."""
    vendor = connection.vendor
    if vendor == "postgresql":
        sql = _postgres_sql()
    elif vendor == "sqlite":
        sql = _sqlite_sql()
    else:  # any other backend: the Python path
        rows = Workload.objects.filter(project_id=project_id).order_by("created_at", "id").values(*LIST_COLUMNS)
        keys = set(_TEXT + _INTS + _JSON) | {"project_slug", "created_at", "updated_at"}
        items = [{k: v for k, v in row_to_wire(r).items() if k in keys} for r in rows]
        return json.dumps(items, separators=(",", ":"))
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id])
        # `config` is sealed at rest (it may carry HF_TOKEN=…); the SDK gets it back as sent.
        return sealing.open_in_json_text(cursor.fetchone()[0])
