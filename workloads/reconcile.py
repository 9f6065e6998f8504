"""Level-triggered reconcile: `plan` is pure, `apply` writes.

`plan(desired, observed, now)` looks at what should run and what the replica rows say, and returns
actions. `run(workload_id)` loads both, applies the actions under a row lock on the workload
(no network call inside), and records the phase with compare-and-set on `generation`. Running it
twice changes nothing; a crash anywhere leaves rows that the next run (or the beat sweep) repairs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inferencekey_web.lib import tasks
from workers import capacity, engines
from workers.models import Replica, Worker

from . import placement, policies
from .models import UNSETTLED, Phase, ReadinessEvent, Workload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Desired:
    generation: int
    count: int | None  # None: this policy is not reconciled yet
    wakes: bool = False  # autoscaling: at zero it is ready (a request wakes it), not stopped


@dataclass(frozen=True)
class Observed:
    id: str
    generation: int
    state: str
    placed: bool  # has a worker
    worker_state: str | None = None
    worker_seen_at: datetime | None = None
    message: str = ""
    created_at: datetime | None = None


@dataclass
class Plan:
    create: int = 0
    place: list[str] = field(default_factory=list)
    drain: list[tuple[str, str]] = field(default_factory=list)  # (replica id, reason)


def _lost(r: Observed, now: datetime) -> str | None:
    """Why a replica no longer counts (its worker is gone, draining or long offline), else None."""
    if not r.placed:
        return None
    if r.worker_state is None:
        return "its worker was deleted"
    if r.worker_state == Worker.State.DRAINING:
        return "its worker is draining"
    if r.worker_state == Worker.State.OFFLINE and r.state == Replica.State.STOPPED:
        # The agent said goodbye and stopped its engines (PROTOCOL.md §4): no grace to wait for.
        return "its worker went offline"
    grace = timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S + settings.WORKER_RESCHEDULE_AFTER_S)
    if r.worker_seen_at is None or now - r.worker_seen_at > grace:
        return "its worker stopped sending heartbeats"
    return None


def plan(desired: Desired, observed: list[Observed], now: datetime) -> Plan:
    out = Plan()
    if desired.count is None:
        return out
    live: list[Observed] = []
    old: list[tuple[Observed, str]] = []  # serving until replaced: (replica, why it goes then)
    for r in observed:
        reason = _lost(r, now)
        if reason and r.worker_state == Worker.State.DRAINING and r.state == Replica.State.READY:
            old.append((r, f"rescheduled: {reason}"))  # its worker still runs it: serve until moved
        elif reason:
            out.drain.append((r.id, f"rescheduled: {reason}"))
        else:
            live.append(r)
    current = [r for r in live if r.generation == desired.generation]
    old += [(r, "replaced by a newer spec") for r in live if r.generation != desired.generation]

    if len(current) < desired.count:
        out.create = desired.count - len(current)
    elif len(current) > desired.count:
        # Drop the least useful first: not ready, then the newest.
        ranked = sorted(current, key=lambda r: (r.state == Replica.State.READY, -(r.created_at or now).timestamp()))
        for r in ranked[: len(current) - desired.count]:
            out.drain.append((r.id, "scaled down"))
        current = [r for r in current if r.id not in {d for d, _ in out.drain}]

    # Rolling update (and a draining worker): keep ready old replicas serving until enough of their
    # replacements are ready.
    current_ready = sum(r.state == Replica.State.READY for r in current)
    for r, reason in old:
        if desired.count == 0 or r.state != Replica.State.READY or current_ready >= desired.count:
            out.drain.append((r.id, reason))
    out.place = [r.id for r in current if not r.placed]
    return out


def make_room(desired: Desired, observed: list[Observed], waiting: int) -> list[tuple[str, str]]:
    """A rolling update that does not fit replaces instead: when `waiting` new replicas found no GPU
    with room (the old generation holds it), drain as many old replicas, oldest first. A workload
    whose replicas fill its GPUs stops serving during such an update; otherwise it would never
    update at all."""
    old = sorted((r for r in observed if r.generation != desired.generation), key=lambda r: (r.created_at is None, r.created_at))
    return [(r.id, "replaced by a newer spec (no room to run both during the update)") for r in old[:waiting]]


@dataclass(frozen=True)
class Status:
    phase: str
    step: str
    message: str


def status(desired: Desired, observed: list[Observed], unplaceable: str = "", why_zero: str = "") -> Status:
    """The workload's phase from the replicas of the current generation (pure)."""
    if desired.count is None:
        return Status(Phase.PENDING, "", "autoscaling is accepted but not reconciled yet (a later release runs it)")
    if desired.count == 0:
        if desired.wakes:
            # wait_until_ready() returns at once; the gateway holds the first request while it wakes.
            return Status(Phase.READY, "", why_zero)
        return Status(Phase.STOPPED, "", why_zero or "0 replicas wanted")
    current = [r for r in observed if r.generation == desired.generation]
    ready = [r for r in current if r.state == Replica.State.READY]
    if ready:
        return Status(Phase.READY, "", f"{len(ready)} of {desired.count} replica(s) ready")
    failed = [r for r in current if r.state == Replica.State.FAILED]
    if failed:
        return Status(Phase.ERROR, "engine_start", failed[0].message or "the engine failed to start")
    if unplaceable or any(not r.placed for r in current) or not current:
        return Status(Phase.SCHEDULING, "placement", unplaceable or "Finding a worker")
    starting = [r for r in current if r.state in (Replica.State.STARTING, Replica.State.UNHEALTHY)]
    if starting:
        message = starting[0].message or "Starting the engine"
        step = "model_pull" if "pull" in message.lower() else "health_check" if "health" in message.lower() else "engine_start"
        return Status(Phase.BOOTSTRAPPING, step, message)
    return Status(Phase.PROVISIONING, "launch_order", "Launch order sent to the worker; waiting for the agent")


def desired_for(workload: Workload, now: datetime) -> tuple[Desired, str]:
    policy = workload.policy or {"kind": "fixed", "replicas": 1}
    if policy.get("kind") == "autoscaling":
        from . import autoscaling

        if not autoscaling.runs_here(policy):
            return Desired(workload.generation, None), ""
        # The autoscaler's persisted target (workloads/autoscaling.py); one replica until it decides.
        count = autoscaling.initial_target(workload)
        return Desired(workload.generation, count, wakes=True), autoscaling.SCALED_TO_ZERO
    count = policies.desired_replicas(policy, now)
    why = ""
    if count == 0:
        why = "outside the schedule's active period" if policy.get("kind") == "scheduled" else "the fixed policy asks for 0 replicas"
    return Desired(workload.generation, count), why


def _observe(workload: Workload) -> list[Observed]:
    return _observe_many([workload.pk]).get(workload.pk, [])


def _launch_for(workload: Workload, where: placement.Placement) -> dict:
    config = workload.config or {}
    spec = engines.EngineInput(
        backend=workload.backend, model_name=workload.model_name, task_type=workload.task_type,
        command=config.get("command"), vllm_version=config.get("vllm_version"),
    )
    host = "127.0.0.1" if where.worker.address in ("127.0.0.1", "localhost") else "0.0.0.0"
    launch = engines.render(spec, host=host, port=where.port, gpu_indices=[g.index for g in where.gpus])
    # The port argv/env were rendered with: the agent substitutes another one if it is taken on its
    # host, and the replica's `port` follows what the agent reports (PROTOCOL.md §3).
    launch["port"] = where.port
    return launch


def run(workload_id: str, now: datetime | None = None) -> Status | None:
    now = now or timezone.now()
    with transaction.atomic():
        workload = Workload.objects.select_for_update().select_related("project").filter(pk=workload_id).first()
        if workload is None:
            log.info("reconcile: workload %s is gone", workload_id)
            return None
        desired, why_zero = desired_for(workload, now)
        # Cloud autoscaling: instances for the target, within the cost ceiling (rows only; the
        # provider calls run after commit). A workload that left the cloud source terminates its own.
        cloud = capacity.plan_instances(workload, desired.count or 0, now) if capacity.is_cloud(workload.policy) else None
        if cloud is not None:
            desired = replace(desired, count=min(desired.count or 0, cloud.wanted))
        before = _observe(workload)
        actions = plan(desired, before, now)
        for replica_id, reason in actions.drain:
            Replica.objects.filter(pk=replica_id, desired=True).update(desired=False, state=Replica.State.DRAINING, message=reason)
        new_ids = [Replica.objects.create(workload=workload, generation=desired.generation).id for _ in range(actions.create)]
        unplaceable = ""
        no_room = 0
        for replica_id in actions.place + new_ids:
            try:
                where = placement.place(workload)
                launch = _launch_for(workload, where)
            except (placement.Unplaceable, engines.RecipeError) as exc:
                unplaceable = str(exc)
                no_room += isinstance(exc, placement.NoRoom)
                Replica.objects.filter(pk=replica_id).update(message=unplaceable)
                continue
            # Compare-and-set: only a still-unplaced replica takes the placement.
            placed = Replica.objects.filter(pk=replica_id, port=None).update(
                worker=where.worker, port=where.port, vram_mb=where.vram_mb, launch=launch,
                spec_hash=engines.launch_hash(launch, where.port), state=Replica.State.PLACED,
                message=f"placed on {where.worker.name}",
            )
            if placed:
                Replica.objects.get(pk=replica_id).gpus.set(where.gpus)
        # Placed once the agent has stopped them (the sweep, or the stop report, runs us again).
        if no_room:
            for replica_id, reason in make_room(desired, _observe(workload), no_room):
                Replica.objects.filter(pk=replica_id, desired=True).update(desired=False, state=Replica.State.DRAINING, message=reason)
        # Read again only when this run changed a replica (the common sweep changes none).
        observed = _observe(workload) if (actions.drain or new_ids or actions.place) else before
        result = status(desired, observed, unplaceable, why_zero)
        if cloud is not None:
            result = cloud_status(result, cloud)
        ready = sum(r.state == Replica.State.READY and r.generation == desired.generation for r in observed)
        Workload.objects.filter(pk=workload.pk, generation=desired.generation).update(
            observed_generation=desired.generation, phase=result.phase, message=result.message[:500],
            desired_replicas=desired.count or 0, ready_replicas=ready, reconciled_at=now,
            next_transition_at=_next_transition(workload, now),
        )
        record_event(workload, desired.generation, result)
    if cloud is not None and capacity.execute(workload_id, now, observe=False):
        tasks.send("workloads.tasks.reconcile_workload", [workload_id])  # launched or lost an instance
    return result


def cloud_status(result: Status, cloud: capacity.CloudStatus) -> Status:
    """The phase while instances boot is provisioning (not "no worker"), and the message says
    when the cost ceiling caps the workers, while the workload keeps serving."""
    if not cloud.message:
        return result
    if result.phase == Phase.SCHEDULING and cloud.active > cloud.running:
        return Status(Phase.PROVISIONING, "instance_boot", cloud.message)
    return Status(result.phase, result.step, f"{result.message}; {cloud.message}" if result.message else cloud.message)


def record_event(workload: Workload, generation: int, result: Status) -> None:
    last = ReadinessEvent.objects.filter(workload=workload).order_by("-id").values("generation", "phase", "step", "message").first()
    current = {"generation": generation, "phase": result.phase, "step": result.step, "message": result.message[:500]}
    if last != current:
        ReadinessEvent.objects.create(workload=workload, **current)


def _next_transition(workload: Workload, now: datetime) -> datetime | None:
    """The stored next schedule change while it is still ahead (the spec's save computed it), else
    the one after `now`."""
    if workload.next_transition_at is not None and workload.next_transition_at > now:
        return workload.next_transition_at
    return policies.next_change(workload.policy or {}, now)


# --- many workloads at once (the sweep, a cold start) ------------------------------------------

BATCH_SIZE = 500
_BATCH_FIELDS = ("id", "project_id", "policy", "generation", "observed_generation", "phase", "message",
                 "desired_replicas", "ready_replicas", "reconciled_at", "next_transition_at")


def _observe_many(workload_ids: list[str]) -> dict[str, list[Observed]]:
    """`_observe` for many workloads in one query."""
    out: dict[str, list[Observed]] = {}
    rows = (Replica.objects.filter(workload_id__in=workload_ids, desired=True)
            .values_list("workload_id", "id", "generation", "state", "port", "worker_id", "worker__state",
                         "worker__last_heartbeat_at", "message", "created_at")
            .order_by("created_at"))
    for wid, rid, gen, state, port, worker_id, wstate, seen, message, created in rows:
        out.setdefault(wid, []).append(Observed(
            id=rid, generation=gen, state=state, placed=port is not None,
            worker_state=wstate if worker_id else None, worker_seen_at=seen if worker_id else None,
            message=message, created_at=created,
        ))
    return out


def _last_events(workload_ids: list[str]) -> dict[str, dict]:
    from django.db.models import Max

    last_ids = (ReadinessEvent.objects.filter(workload_id__in=workload_ids).values("workload_id")
                .annotate(last=Max("id")).values_list("last", flat=True))
    return {e.pop("workload_id"): e for e in ReadinessEvent.objects.filter(id__in=list(last_ids))
            .values("workload_id", "generation", "phase", "step", "message")}


def run_many(workload_ids, now: datetime | None = None) -> dict[str, int]:
    """Reconcile many workloads with a few queries per batch of BATCH_SIZE.

    Handled here: a workload whose plan only restates its status (the common sweep, closed
    schedules), one that only needs new replicas and pins nothing (a cold start, a schedule that
    opens: placed with one HostBook per team, bulk inserts), and one that only drains (a schedule
    that closes: one UPDATE per reason). Rows
    are written only when something changed, grouped into one UPDATE per distinct outcome, with
    compare-and-set on `generation` and on the `reconciled_at` that was read (a concurrent `run()`
    wins). Everything else (drains, rolling updates, pins, autoscaling, cloud capacity) goes
    through `run()` under its row lock. Returns counts: settled, placed, written, run."""
    now = now or timezone.now()
    ids = list(dict.fromkeys(workload_ids))
    counts = {"settled": 0, "placed": 0, "written": 0, "run": 0}
    slow: list[str] = []
    for start in range(0, len(ids), BATCH_SIZE):
        chunk = ids[start:start + BATCH_SIZE]
        workloads = list(Workload.objects.filter(pk__in=chunk).only(*_BATCH_FIELDS, "worker_id", "gpu_resource_id"))
        observed = _observe_many(chunk)
        last_events = _last_events(chunk)
        settled: list[tuple[Workload, Desired, str, list[Observed]]] = []
        fresh: dict[str, tuple[Workload, Desired, str, list[Observed], int]] = {}
        drains: dict[str, tuple[Workload, Desired, str, list[Observed], list[tuple[str, str]]]] = {}
        for w in workloads:
            if (w.policy or {}).get("kind", "fixed") not in ("fixed", "scheduled"):
                slow.append(w.id)  # autoscaling and cloud capacity keep their own path
                continue
            desired, why_zero = desired_for(w, now)
            obs = observed.get(w.id, [])
            actions = plan(desired, obs, now)
            if not (actions.create or actions.place or actions.drain):
                settled.append((w, desired, why_zero, obs))
            elif (actions.create and not actions.place and not actions.drain and not w.worker_id
                  and not w.gpu_resource_id and all(r.generation == desired.generation for r in obs)):
                fresh[w.id] = (w, desired, why_zero, obs, actions.create)
            elif actions.drain and not actions.create and not actions.place:
                drains[w.id] = (w, desired, why_zero, obs, actions.drain)  # a schedule closing, a scale-down
            else:
                slow.append(w.id)
        with transaction.atomic():
            placed, lost_race = _place_fresh(fresh, drains, now)
            slow += lost_race
            outcomes = [(w, desired, status(desired, obs, "", why_zero), obs) for w, desired, why_zero, obs in settled]
            outcomes += placed
            counts["settled"] += len(settled)
            counts["placed"] += len(placed)
            counts["written"] += _write_outcomes(outcomes, last_events, now)
    for workload_id in slow:
        run(workload_id, now)
        counts["run"] += 1
    return counts


def _place_fresh(fresh: dict, drains: dict, now: datetime) -> tuple[list, list[str]]:
    """Create and place the new replicas of `fresh` workloads, drain those of `drains` (inside the
    caller's transaction): rows locked and re-checked first (changed since read → left to run()),
    one HostBook per team, bulk writes."""
    if not fresh and not drains:
        return [], []
    rows = (Workload.objects.select_for_update(of=("self",)).select_related("project")
            .filter(pk__in=[*fresh, *drains]).order_by("pk"))
    books: dict[str, tuple[list[Worker], placement.HostBook]] = {}
    replicas: list[Replica] = []
    gpu_links = []
    out, lost = [], []
    draining: dict[str, list[str]] = {}
    for full in rows:
        w, desired, why_zero, obs, work = fresh.pop(full.pk, None) or drains.pop(full.pk)
        if (full.generation, full.reconciled_at) != (w.generation, w.reconciled_at):
            lost.append(full.pk)
            continue
        if isinstance(work, list):
            for replica_id, reason in work:
                draining.setdefault(reason, []).append(replica_id)
            gone = {replica_id for replica_id, _ in work}
            remaining = [r for r in obs if r.id not in gone]
            out.append((w, desired, status(desired, remaining, "", why_zero), remaining))
            continue
        create = work
        team_id = full.project.team_id
        if team_id not in books:
            candidates = list(placement.eligible_workers(team_id))
            books[team_id] = (candidates, placement.HostBook(candidates))
        candidates, book = books[team_id]
        need = engines.vram_estimate_mb(full.model_name)
        unplaceable = ""
        new_obs = []
        for _ in range(create):
            try:
                where = book.place(candidates, need, full.model_name)
                launch = _launch_for(full, where)
            except (placement.Unplaceable, engines.RecipeError) as exc:
                unplaceable = str(exc)
                replica = Replica(workload_id=full.pk, generation=desired.generation, message=unplaceable[:500])
            else:
                replica = Replica(workload_id=full.pk, generation=desired.generation, worker=where.worker, port=where.port,
                                  vram_mb=where.vram_mb, launch=launch, spec_hash=engines.launch_hash(launch, where.port),
                                  state=Replica.State.PLACED, message=f"placed on {where.worker.name}")
                gpu_links += [Replica.gpus.through(replica_id=replica.id, gpu_id=g.id) for g in where.gpus]
            replicas.append(replica)
            new_obs.append(Observed(
                id=replica.id, generation=desired.generation, state=replica.state, placed=replica.port is not None,
                worker_state=replica.worker.state if replica.worker_id else None,
                worker_seen_at=replica.worker.last_heartbeat_at if replica.worker_id else None,
                message=replica.message, created_at=now,
            ))
        observed = obs + new_obs
        out.append((w, desired, status(desired, observed, unplaceable, why_zero), observed))
    lost += [*fresh, *drains]  # gone since read
    for reason, replica_ids in draining.items():
        Replica.objects.filter(pk__in=replica_ids, desired=True).update(desired=False, state=Replica.State.DRAINING, message=reason)
    Replica.objects.bulk_create(replicas, batch_size=500)
    Replica.gpus.through.objects.bulk_create(gpu_links, batch_size=500)
    return out, lost


def _write_outcomes(outcomes: list, last_events: dict[str, dict], now: datetime) -> int:
    """Write each workload's status where it changed: one UPDATE per distinct outcome, compare-
    and-set on generation and the reconciled_at read; readiness events in one insert."""
    groups: dict[tuple, list[str]] = {}
    events: dict[str, dict] = {}
    for w, desired, result, obs in outcomes:
        ready = sum(r.state == Replica.State.READY and r.generation == desired.generation for r in obs)
        new = (desired.generation, result.phase, result.message[:500], desired.count or 0, ready, _next_transition(w, now))
        if new != (w.observed_generation, w.phase, w.message, w.desired_replicas, w.ready_replicas, w.next_transition_at):
            groups.setdefault((*new, w.generation, w.reconciled_at), []).append(w.id)
        event = {"generation": desired.generation, "phase": result.phase, "step": result.step, "message": result.message[:500]}
        if last_events.get(w.id) != event:
            events[w.id] = event
    written = 0
    lost: set[str] = set()
    for (gen, phase, message, count, ready, nxt, generation, seen), group in groups.items():
        done = Workload.objects.filter(pk__in=group, generation=generation, reconciled_at=seen).update(
            observed_generation=gen, phase=phase, message=message, desired_replicas=count,
            ready_replicas=ready, next_transition_at=nxt, reconciled_at=now,
        )
        written += done
        if done < len(group):
            won = set(Workload.objects.filter(pk__in=group, reconciled_at=now).values_list("id", flat=True))
            lost |= set(group) - won
    ReadinessEvent.objects.bulk_create(
        [ReadinessEvent(workload_id=wid, **event) for wid, event in events.items() if wid not in lost], batch_size=500)
    return written


def lagging_workloads(now: datetime | None = None) -> list[str]:
    """Workloads the sweep reconciles: spec not yet observed, not settled, a schedule change that
    has come, or replicas on workers that went quiet or failed. A steady sweep reads indexes and
    writes nothing."""
    from django.db.models import Q

    from workers.services import mark_quiet_workers_offline

    now = now or timezone.now()
    mark_quiet_workers_offline(now)
    stale = now - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S)
    # Two index reads (no ordering): the partial index of unsettled rows, and due schedules.
    ids = set(Workload.objects.filter(UNSETTLED).order_by().values_list("id", flat=True))
    ids |= set(Workload.objects.filter(next_transition_at__lte=now).order_by().values_list("id", flat=True))
    ids |= set(
        Replica.objects.filter(desired=True).exclude(workload=None)
        .filter(Q(worker__isnull=True) | Q(worker__last_heartbeat_at__lt=stale) | ~Q(worker__state=Worker.State.ONLINE)
                | Q(state__in=[Replica.State.UNHEALTHY, Replica.State.FAILED]))
        .values_list("workload_id", flat=True)
    )
    # Rows of undesired replicas whose worker is gone or silent: delete only when there are some
    # (a DELETE that matches nothing is still a write statement on every sweep).
    gone = list(Replica.objects.filter(desired=False).filter(Q(worker__isnull=True) | Q(worker__last_heartbeat_at__lt=stale))
                .values_list("id", flat=True)[:1000])
    if gone:
        Replica.objects.filter(pk__in=gone, desired=False).delete()
    return sorted(ids)
