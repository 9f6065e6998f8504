"""What the gateway needs from the database, as small frozen values: data keys and route tables.

Loaded through the Django ORM in a worker thread (`sync_to_async`, not thread-sensitive: read-only
queries plus `lookup`'s throttled `last_used_at` write) and cached by `gateway.cache`.
Connections follow Django's request rules: `close_old_connections()` before and after a load, so
`DB_CONN_MAX_AGE` behaves as it does for views.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone

from accounts import services as account_services
from accounts.models import DataKey
from workers.models import Replica
from workloads import autoscaler, policies
from workloads.models import Workload


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    project_id: str
    project_slug: str
    all_workloads: bool
    workload_ids: frozenset[str]
    expires_at: float | None = None  # epoch seconds: a cached key still stops at its expiry

    def covers(self, workload_id: str) -> bool:
        return self.all_workloads or workload_id in self.workload_ids

    def in_project(self, segment: str) -> bool:
        """The path's project segment names this key's project (by slug or by `proj_` id)."""
        return segment == self.project_slug or segment == self.project_id


@dataclass(frozen=True, slots=True)
class Target:
    replica_id: str
    host: str  # the worker's address (where the gateway reaches its engines)
    port: int
    api_base: bytes  # the recipe's API prefix, e.g. b"/v1"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.api_base.decode()}"


@dataclass(frozen=True, slots=True)
class Route:
    workload_id: str
    slug: str
    model_name: str
    task_type: str
    backend: str
    targets: tuple[Target, ...]  # ready replicas, oldest first
    # With no ready replica: whether the gateway holds requests (and why not), see gateway/wake.py.
    phase: str = ""
    message: str = ""
    autoscaling: bool = False  # a held request wakes it (queues the autoscaler)
    opens_at: float | None = None  # scheduled and outside its window: epoch s of the next opening
    per_replica: int = 0  # autoscaling: requests in flight one replica is sized for
    max_replicas: int = 0  # autoscaling: max_workers


def _load_key_sync(token: str) -> KeyInfo | None:
    close_old_connections()
    try:
        record = account_services.lookup(DataKey, token)  # active only; throttles last_used_at
        if record is None:
            return None
        ids = frozenset() if record.all_workloads else frozenset(record.workloads.values_list("id", flat=True))
        return KeyInfo(
            key_id=record.id,
            project_id=record.project_id,
            project_slug=record.project.slug,
            all_workloads=record.all_workloads,
            workload_ids=ids,
            expires_at=record.expires_at.timestamp() if record.expires_at else None,
        )
    finally:
        close_old_connections()


def make_target(replica_id: str, address: str, port: int, launch: dict | None) -> Target:
    api_base = str((launch or {}).get("api_base") or "/v1").strip().rstrip("/")
    if api_base and not api_base.startswith("/"):
        api_base = "/" + api_base
    return Target(replica_id, address.strip().strip("[]"), int(port), api_base.encode())


def _load_route_sync(project_id: str, workload: str) -> Route | None:
    close_old_connections()
    try:
        lookup = {"id": workload} if workload.startswith("wl_") else {"slug": workload}
        row = (
            Workload.objects.filter(project_id=project_id, **lookup)
            .values("id", "slug", "model_name", "task_type", "backend", "phase", "message", "policy")
            .first()
        )
        if row is None:
            return None
        replicas = (
            Replica.objects.filter(
                workload_id=row["id"],
                state=Replica.State.READY,
                desired=True,
                port__isnull=False,
                worker__isnull=False,
            )
            .exclude(worker__address="")
            .order_by("created_at")
            .values_list("id", "port", "launch", "worker__address")
        )
        targets = tuple(make_target(rid, address, port, launch) for rid, port, launch, address in replicas)
        policy = row["policy"] or {}
        scaling = autoscaler.Policy.from_dict(policy, row["backend"], row["task_type"] or "text2text") \
            if policy.get("kind") == "autoscaling" else None
        return Route(
            workload_id=row["id"],
            slug=row["slug"],
            model_name=row["model_name"],
            task_type=row["task_type"] or "text2text",
            backend=row["backend"],
            targets=targets,
            phase=row["phase"],
            message=row["message"],
            autoscaling=policy.get("kind") == "autoscaling",
            opens_at=None if targets else _opens_at(row["id"], policy),
            per_replica=scaling.target_inflight_per_replica if scaling else 0,
            max_replicas=scaling.max_workers if scaling else 0,
        )
    finally:
        close_old_connections()


# Next opening per workload, kept until it passes (or the policy changes): finding it can scan a
# schedule, and a closed workload's route is reloaded every ~1 s while requests come in.
_OPENINGS: dict[str, tuple[str, float]] = {}


def _opens_at(workload_id: str, policy: dict) -> float | None:
    """A scheduled policy outside its active period: when it opens next (epoch s), else None."""
    if policy.get("kind") != "scheduled":
        return None
    now = timezone.now()
    if policies.schedule_active(policy, now):
        return None
    key = json.dumps(policy, sort_keys=True)
    cached = _OPENINGS.get(workload_id)
    if cached is not None and cached[0] == key and now.timestamp() < cached[1]:
        return cached[1]
    nxt = policies.next_change(policy, now) if hasattr(policies, "next_change") else \
        next((t for t, active in policies.next_transitions(policy, now, 2) if active), None)
    opens = nxt.timestamp() if nxt is not None else float("inf")
    if len(_OPENINGS) > 100_000:
        _OPENINGS.clear()
    _OPENINGS[workload_id] = (key, opens)
    return opens


load_key = sync_to_async(_load_key_sync, thread_sensitive=False)
load_route = sync_to_async(_load_route_sync, thread_sensitive=False)
