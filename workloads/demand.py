"""Demand per workload, shared by every gateway process: requests in flight + requests held.

Each gateway process counts in memory (gateway/metrics.py) and a background task publishes its
counts here about once a second (only what changed, plus a refresh of non-zero counts); the
autoscaler reads the sum over processes. Two stores:

* Redis, when `INFERENCEKEY_DEMAND_URL`, `CELERY_BROKER_URL` or `THROTTLE_CACHE_URL` is a
  `redis://` URL (the first of them): one hash per
  process (`ik:demand:<process>`, field = workload id), expiring on its own when the process dies.
* the database otherwise (the embedded default): one `GatewayDemand` row per (process, workload).

A count older than STALE_S is ignored (its process stopped refreshing it: died or restarted);
`last_request_at` (the latest request a process saw) is kept from every row, so a request that
started and ended between two autoscaler ticks still counts as demand for the scale-down delay.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

STALE_S = 5.0  # a process refreshes non-zero counts every REFRESH_S; past this they are gone
REFRESH_S = 2.0
KEEP_S = 3600.0  # zero rows kept this long (their last_request_at), then deleted by the sweep
_PREFIX = "ik:demand:"
_PROCS = "ik:demand-processes"


@dataclass(frozen=True)
class Counts:
    inflight: int = 0
    held: int = 0
    last_request_at: float | None = None  # epoch seconds


@lru_cache(maxsize=1)
def _redis_url() -> str:
    """INFERENCEKEY_DEMAND_URL, else the first Redis URL among the broker and the throttle cache."""
    throttle = getattr(settings, "CACHES", {}).get("throttle", {})
    candidates = [getattr(settings, "DEMAND_URL", ""), getattr(settings, "CELERY_BROKER_URL", "")]
    if "redis" in throttle.get("BACKEND", ""):
        candidates.append(throttle.get("LOCATION", ""))
    return next((url for url in candidates if url and url.startswith(("redis://", "rediss://"))), "")


@lru_cache(maxsize=1)
def _redis():
    import redis

    return redis.Redis.from_url(_redis_url(), socket_timeout=2, socket_connect_timeout=2)


def store() -> str:
    return "redis" if _redis_url() else "database"


def publish(process: str, counts: dict[str, Counts], now: float | None = None) -> None:
    """Record this process's counts for the given workloads (called off the request path)."""
    if not counts:
        return
    now = time.time() if now is None else now
    if _redis_url():
        r = _redis()
        key = _PREFIX + process
        pipe = r.pipeline(transaction=False)
        pipe.hset(key, mapping={wid: f"{c.inflight} {c.held} {c.last_request_at or 0} {now}" for wid, c in counts.items()})
        pipe.expire(key, int(KEEP_S))
        pipe.zadd(_PROCS, {process: now})
        pipe.execute()
        return
    from .models import GatewayDemand

    for wid, c in counts.items():
        GatewayDemand.objects.update_or_create(
            process=process, workload_id=wid,
            defaults={"inflight": c.inflight, "held": c.held, "last_request_at": c.last_request_at, "updated_at": now},
        )


def read(workload_ids: list[str] | None = None, now: float | None = None) -> dict[str, Counts]:
    """Counts per workload summed over the gateway processes (all workloads when ids is None)."""
    now = time.time() if now is None else now
    totals: dict[str, list] = {}

    def add(wid: str, inflight: int, held: int, last: float | None, updated: float) -> None:
        row = totals.setdefault(wid, [0, 0, None])
        if now - updated <= STALE_S:
            row[0] += inflight
            row[1] += held
        if last:
            row[2] = last if row[2] is None else max(row[2], last)

    if _redis_url():
        r = _redis()
        r.zremrangebyscore(_PROCS, 0, now - KEEP_S)
        procs = [p.decode() for p in r.zrange(_PROCS, 0, -1)]
        pipe = r.pipeline(transaction=False)
        for p in procs:
            if workload_ids is None:
                pipe.hgetall(_PREFIX + p)
            else:
                pipe.hmget(_PREFIX + p, workload_ids)
        for result in pipe.execute():
            items = result.items() if isinstance(result, dict) else zip(workload_ids or [], result, strict=False)
            for wid, value in items:
                if value is None:
                    continue
                inflight, held, last, updated = value.decode().split()
                add(wid.decode() if isinstance(wid, bytes) else wid, int(inflight), int(held), float(last) or None, float(updated))
    else:
        from .models import GatewayDemand

        rows = GatewayDemand.objects.all()
        if workload_ids is not None:
            rows = rows.filter(workload_id__in=workload_ids)
        for wid, inflight, held, last, updated in rows.values_list("workload_id", "inflight", "held", "last_request_at", "updated_at"):
            add(wid, inflight, held, last, updated)
    return {wid: Counts(*row) for wid, row in totals.items()}


def forget_old(now: float | None = None) -> None:
    """Delete rows of processes long gone (database store; Redis keys expire on their own)."""
    if _redis_url():
        return
    from django.db.models import Q

    from .models import GatewayDemand

    now = time.time() if now is None else now
    GatewayDemand.objects.filter(updated_at__lt=now - KEEP_S).filter(
        Q(last_request_at__isnull=True) | Q(last_request_at__lt=now - KEEP_S)).delete()
