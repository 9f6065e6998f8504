"""Running the autoscaler: observe → decide → persist → reconcile (the thin part around
workloads/autoscaler.py, as reconcile.run() is around plan()).

`tick(workload_id)` is what the Celery task `workloads.tasks.autoscale` runs: beat calls it for every
autoscaling workload every AUTOSCALE_INTERVAL_S, and a gateway queues it at once for one workload
when a request is held for it (scale from zero). The decision's state is written with
compare-and-set on `generation`; a changed target runs the reconcile at once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from workers import capacity
from workers.models import Replica, Worker

from . import autoscaler, demand
from .models import Workload

log = logging.getLogger(__name__)

# A state whose only change is a refreshed timestamp is written at most this often (restarts then
# lose at most this much of the scale-down window; a steady workload costs no write per tick).
STATE_REFRESH_S = 15.0
SCALED_TO_ZERO = "scaled to zero; wakes on the next request"


def runs_here(policy: dict) -> bool:
    """Autoscaling workloads this module scales: on private workers, and on cloud instances (the
    target becomes instances in workers/capacity.py, within the cost ceiling)."""
    return policy.get("kind") == "autoscaling" and policy.get("source") in ("private", "cloud")


def initial_target(workload: Workload) -> int:
    """The target before the autoscaler has decided for this generation (a create or a change)."""
    state = autoscaler.State.load(workload.autoscaler)
    if state.target is not None and state.generation == workload.generation:
        return state.target
    policy = autoscaler.Policy.of(workload)
    return max(1, policy.min_workers, state.target or 0)


def private_slots(workload: Workload) -> tuple[int, str]:
    """Replicas the listed private workers can hold: one per GPU, and on a CPU-capable worker
    without GPUs one per CPU (`cpu_count`, at least 1). Only online workers the team may use."""
    ids = (workload.policy or {}).get("private_worker_ids") or []
    fresh = timezone.now().timestamp() - settings.WORKER_OFFLINE_AFTER_S
    usable = Q(team_id=workload.project.team_id)
    if settings.ALLOW_SHARED_WORKER:
        usable |= Q(team__isnull=True)
    slots = 0
    workers = Worker.objects.filter(usable, pk__in=ids, state=Worker.State.ONLINE).prefetch_related("gpus")
    for w in workers:
        if w.last_heartbeat_at is None or w.last_heartbeat_at.timestamp() < fresh:
            continue
        gpus = len(w.gpus.all())
        slots += gpus if gpus else (max(1, w.cpu_count) if w.accepts_cpu else 0)
    return slots, f"{slots} slot(s) on the listed private workers"


UNKNOWN = demand.Counts(inflight=-1)  # the demand store could not be read: decide() holds the target


@dataclass
class Pass:
    """Lookups shared by one beat pass, so a steady pass costs a few queries in all, not per workload."""

    ready: dict[tuple[str, int], int] = field(default_factory=dict)  # (workload id, generation) → ready
    slots: dict[tuple, tuple[int, str]] = field(default_factory=dict)  # (team, worker ids) → slots, why

    @classmethod
    def load(cls) -> Pass:
        rows = (Replica.objects.filter(desired=True, state=Replica.State.READY, workload__policy__kind="autoscaling")
                .values("workload_id", "generation").annotate(n=Count("id")))
        return cls(ready={(r["workload_id"], r["generation"]): r["n"] for r in rows})


def observe(workload: Workload, counts: demand.Counts | None, shared: Pass | None = None) -> autoscaler.Observation:
    """The observation for one autoscaling workload: demand, ready replicas, and the cap (private
    slots, or the cloud cost ceiling)."""
    if shared is not None:
        ready = shared.ready.get((workload.pk, workload.generation), 0)
    else:
        ready = Replica.objects.filter(workload=workload, desired=True, generation=workload.generation,
                                       state=Replica.State.READY).count()
    if capacity.is_cloud(workload.policy):
        # Cloud: as many instances as max_workers, max_instances and the cost ceiling allow.
        limit = capacity.cap_for(workload.policy, capacity.eligible(workload.policy))
        slots, why = limit.workers, limit.reason
    elif shared is not None:
        key = (workload.project.team_id, tuple(sorted((workload.policy or {}).get("private_worker_ids") or [])))
        if key not in shared.slots:
            shared.slots[key] = private_slots(workload)
        slots, why = shared.slots[key]
    else:
        slots, why = private_slots(workload)
    counts = counts or demand.Counts()
    return autoscaler.Observation(
        demand=None if counts is UNKNOWN else counts.inflight + counts.held, inflight=counts.inflight, held=counts.held, ready=ready,
        last_request_at=counts.last_request_at, generation=workload.generation,
        cap=slots or None, cap_reason=why,
    )


def _material(state: dict) -> tuple:
    # Timestamps that only move forward while nothing else changes (the max-window's newest entry,
    # the last demand) are refreshed every STATE_REFRESH_S, not every tick; the gateways' own
    # last_request_at covers the gap after a restart.
    recs = state.get("recommendations") or []
    return (state.get("target"), state.get("generation"), state.get("samples"), state.get("panic_until"),
            [v for _, v in recs])


def policy_for(workload: Workload) -> autoscaler.Policy:
    """Cloud: a scale-up must hold for INFERENCEKEY_CLOUD_SCALE_UP_DELAY_S before it launches an
    instance (each one costs minutes of money; a blip should not); from zero it is immediate."""
    delay = settings.CLOUD_SCALE_UP_DELAY_S if capacity.is_cloud(workload.policy) else 0.0
    return autoscaler.Policy.of(workload, scale_up_delay_s=delay)


def tick(workload_id: str, now: datetime | None = None, counts: demand.Counts | None = None, *,
         workload: Workload | None = None, shared: Pass | None = None) -> autoscaler.Decision | None:
    now = now or timezone.now()
    if workload is None:
        workload = Workload.objects.select_related("project").filter(pk=workload_id).first()
    if workload is None or not runs_here(workload.policy or {}):
        return None
    if counts is None:
        counts = _read([workload_id]).get(workload_id, demand.Counts())
    previous = workload.autoscaler or {}
    state = autoscaler.State.load(previous)
    decision = autoscaler.decide(policy_for(workload), state, observe(workload, counts, shared), now)
    dumped = decision.state.dump()
    saved_at = previous.get("saved_at") or 0.0
    unchanged = all(previous.get(k) == v for k, v in dumped.items())
    if not unchanged and (_material(dumped) != _material(previous) or now.timestamp() - saved_at >= STATE_REFRESH_S):
        dumped["saved_at"] = now.timestamp()
        dumped["reason"] = decision.reason
        dumped["desired"] = decision.desired
        dumped["capped"] = decision.capped
        # Compare-and-set: a spec change meanwhile starts over at its own initial scale.
        Workload.objects.filter(pk=workload.pk, generation=workload.generation).update(autoscaler=dumped)
    if decision.target != workload.desired_replicas or decision.target != state.target:
        from . import reconcile

        log.info("autoscale %s: %s → %s (%s)", workload.slug, state.target, decision.target, decision.reason)
        reconcile.run(workload.pk, now)
    return decision


def _read(ids: list[str]) -> dict[str, demand.Counts]:
    """Demand for `ids`; every one UNKNOWN when the store cannot be read (Redis down): no scale-down
    on missing data."""
    try:
        return demand.read(ids)
    except Exception as exc:
        log.warning("autoscale: demand store unreadable (%r): holding every target", exc)
        return {wid: UNKNOWN for wid in ids}


def tick_all(now: datetime | None = None) -> int:
    """One beat pass over every private autoscaling workload (demand read once for all)."""
    started = time.monotonic()
    workloads = list(Workload.objects.filter(policy__kind="autoscaling", policy__source__in=["private", "cloud"])
                     .select_related("project"))
    if not workloads:
        return 0
    ids = [w.pk for w in workloads]
    counts = _read(ids)
    shared = Pass.load()
    for workload in workloads:
        wid = workload.pk
        try:
            tick(wid, now, counts.get(wid) or demand.Counts(), workload=workload, shared=shared)
        except Exception:  # one bad workload must not stop the others
            log.exception("autoscale %s failed", wid)
    log.debug("autoscale pass over %d workloads in %.3fs", len(ids), time.monotonic() - started)
    return len(ids)


def summary(workload: Workload) -> dict:
    """What the dashboard and the API show about the autoscaler (a selector: reads only)."""
    state = workload.autoscaler or {}
    try:
        counts = demand.read([workload.pk]).get(workload.pk, demand.Counts())
    except Exception:  # the demand store is down: show the rest
        counts = None
    return {
        "demand": None if counts is None else counts.inflight + counts.held,
        "inflight": None if counts is None else counts.inflight,
        "held": None if counts is None else counts.held,
        "target": state.get("target"),
        "desired": state.get("desired"),
        "capped": bool(state.get("capped")),
        "reason": state.get("reason", ""),
        "ready_replicas": workload.ready_replicas,
        "target_inflight_per_replica": autoscaler.Policy.of(workload).target_inflight_per_replica,
        "scale_down_delay_s": autoscaler.Policy.of(workload).scale_down_delay_s,
    }
