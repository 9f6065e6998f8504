"""Cloud capacity: turn an autoscaling workload's target into provider instances.

`plan_instances(workload, target, now)` runs inside the reconcile's workload lock and only writes
rows: new `pending` instances (cheapest eligible GPU first, skipping GPUs that just failed for
capacity) and `terminating` ones when there are too many. `execute(workload_id)` runs outside any
transaction and makes the provider calls: launch pending rows, terminate terminating ones, and
observe the rest (gone at the provider → failed/preempted; no agent within the boot deadline →
terminated and replaced). Cost is an invariant, not an afterthought: a row is only written when
the hourly cost of every billed instance of the workload (terminating ones included, until the
provider confirms) plus its price stays within the ceiling.

Workers never import workloads: the workload arrives as an object (duck-typed) or an id.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inferencekey_web.lib import base_url as base_url_file
from inferencekey_web.lib import tasks
from inferencekey_web.lib.slugs import canonical_slug

from . import cost, providers, services
from .models import Instance, Replica, Worker
from .providers.base import GONE, MANAGED, MANAGED_LABEL, PREEMPTED, WORKLOAD_LABEL, CapacityError, LaunchSpec, Offer

log = logging.getLogger(__name__)

CAPACITY_RETRY_S = 300  # a GPU that had no capacity is tried again after this
FAILURE_RETRY_S = 30  # a launch that failed otherwise (API error) is retried after this
BILLED = Instance.BILLED_STATES
ACTIVE = (Instance.State.PENDING, Instance.State.PROVISIONING, Instance.State.RUNNING)


def is_cloud(policy: dict | None) -> bool:
    policy = policy or {}
    return policy.get("kind") == "autoscaling" and policy.get("source") == "cloud"


def eligible(policy: dict, provider=None) -> list[Offer]:
    """The provider's offers for the pool, cheapest first."""
    provider = provider or providers.get_provider()
    return provider.offers(list(policy.get("gpu_pool") or []), policy.get("allowed_cuda_versions") or None)


def cap_for(policy: dict, offers: list[Offer]) -> cost.Cap:
    cheapest = cost.PricedGpu(offers[0].gpu, offers[0].usd_per_hour) if offers else None
    return cost.cap(policy, cheapest)


@dataclass(frozen=True)
class CloudStatus:
    cap: cost.Cap
    wanted: int  # the target after the cap
    active: int  # instances pending, provisioning or running
    running: int  # instances whose agent registered
    usd_per_hour: Decimal  # billed now (terminating included)
    message: str


def _name(workload) -> str:
    stem = canonical_slug(getattr(workload, "slug", "") or "w")[:40].strip("-") or "w"
    return f"ik-{stem}-{secrets.token_hex(3)}"


def _worker_busy(worker_id: str | None) -> bool:
    return bool(worker_id) and Replica.objects.filter(worker_id=worker_id).exists()


def plan_instances(workload, target: int, now: datetime, provider=None) -> CloudStatus:
    """Rows only (call under the workload's row lock): launch up to min(target, cap) within the
    ceiling, mark the excess terminating (never one whose worker still runs a replica: the
    reconcile drains it first)."""
    policy = workload.policy or {}
    rows = list(Instance.objects.filter(workload=workload, state__in=BILLED))
    active = [r for r in rows if r.state in ACTIVE]
    billed = sum((r.price_usd_per_hour for r in rows), Decimal(0))
    if not is_cloud(policy):
        target, offers = 0, []
    else:
        offers = eligible(policy, provider)
    capped = cap_for(policy, offers) if is_cloud(policy) else cost.Cap(0, False, "")
    wanted = max(0, min(target, capped.workers))
    note = ""
    if len(active) > wanted:
        unregistered = sorted((r for r in active if r.worker_id is None), key=lambda r: r.created_at, reverse=True)
        idle = [r for r in active if r.worker_id is not None and not _worker_busy(r.worker_id)]
        for r in (unregistered + idle)[: len(active) - wanted]:
            Instance.objects.filter(pk=r.pk, state__in=ACTIVE).update(state=Instance.State.TERMINATING, message="scaled down")
            active.remove(r)
    elif len(active) < wanted:
        recent = Instance.objects.filter(workload=workload, state=Instance.State.FAILED, terminated_at__isnull=False)
        skip = set(recent.filter(capacity_error=True, terminated_at__gte=now - timedelta(seconds=CAPACITY_RETRY_S))
                   .values_list("gpu_name", flat=True))
        skip |= set(recent.filter(capacity_error=False, terminated_at__gte=now - timedelta(seconds=FAILURE_RETRY_S))
                    .values_list("gpu_name", flat=True))
        choices = [o for o in offers if o.gpu not in skip]
        provider_name = (provider or providers.get_provider()).name
        for _ in range(wanted - len(active)):
            offer = next((o for o in choices if cost.affordable(billed, o.usd_per_hour, policy)), None)
            if offer is None:
                note = ("no GPU of the pool is available right now (capacity errors); retrying" if not choices else
                        f"waiting for terminating instances before launching within {cost.ceiling_field(policy)}")
                break
            row = Instance.objects.create(
                name=_name(workload), workload=workload, team_id=workload.project.team_id, provider=provider_name,
                gpu_name=offer.gpu, offer=offer.as_json(), price_usd_per_hour=offer.usd_per_hour,
                message=f"launching on {provider_name}",
            )
            active.append(row)
            billed += offer.usd_per_hour
    running = sum(r.state == Instance.State.RUNNING for r in active)
    booting = len(active) - running
    parts = []
    if booting:
        parts.append(f"{booting} instance(s) starting on {active[-1].provider} ({active[-1].gpu_name})")
    # What the autoscaler wanted before bounds (workloads/autoscaler.py persists it as "desired").
    asked = max(target, int((getattr(workload, "autoscaler", None) or {}).get("desired") or 0))
    if capped.by_cost and asked > capped.workers:
        parts.append(capped.reason)
    elif not offers and is_cloud(policy):
        parts.append("no GPU of the pool has an offer on this provider")
    if note:
        parts.append(note)
    return CloudStatus(capped, wanted, len(active), running, billed, "; ".join(parts))


def server_url() -> str:
    return (settings.CLOUD_SERVER_URL or base_url_file.resolve(settings.DATA_DIR, flag=None,
                                                               default="http://127.0.0.1:8000")).rstrip("/")


def execute(workload_id: str | None = None, now: datetime | None = None, provider=None, observe: bool = True) -> bool:
    """Provider calls for one workload's instances (or, with None, for every instance the database
    says is billed): launch, terminate, and with `observe` ask the provider about the others (the
    reconcile leaves that to the sweep: a SkyPilot status call takes seconds). No transaction is
    held across a call. Returns whether anything changed (the caller re-runs the reconcile)."""
    now = now or timezone.now()
    provider = provider or providers.get_provider()
    rows = Instance.objects.filter(state__in=BILLED, provider=provider.name)
    if workload_id is not None:
        rows = rows.filter(Q(workload_id=workload_id))
    changed = False
    for row in list(rows.select_related("worker")):
        if row.state == Instance.State.TERMINATING or row.workload_id is None:
            _terminate(row, provider, now, row.message if row.state == Instance.State.TERMINATING else "its workload was deleted")
            changed = True
        elif row.state == Instance.State.PENDING and row.launched_at is None:
            changed |= _launch(row, provider, now)
        elif observe:
            changed |= _observe(row, provider, now)
    return changed


def _launch(row: Instance, provider, now: datetime) -> bool:
    # Compare-and-set claim: one launcher per row, however many reconciles run at once.
    if not Instance.objects.filter(pk=row.pk, state=Instance.State.PENDING, launched_at=None).update(launched_at=now):
        return False
    deadline = timedelta(seconds=settings.CLOUD_BOOT_DEADLINE_S + 60)
    labels = {**MANAGED, WORKLOAD_LABEL: row.workload_id or "", "inferencekey.io/source": "cloud"}
    issued = services.join_token_create(team=row.team, name=row.name, labels=labels, ttl=deadline,
                                        kind=Worker.Kind.CLOUD)
    Instance.objects.filter(pk=row.pk).update(join_token=issued.record)
    try:
        provider.launch(row.name, Offer.from_json(row.offer), issued.value, LaunchSpec(server_url(), labels))
    except CapacityError as exc:
        _fail(row, now, f"no capacity for {row.gpu_name}: {exc}", capacity=True)
        return True
    except Exception as exc:  # noqa: BLE001 - any provider failure: recorded, retried after FAILURE_RETRY_S
        log.warning("launch %s failed: %s", row.name, exc)
        _fail(row, now, f"launch failed: {exc}", capacity=False)
        try:
            provider.terminate(row.name)  # a half-made machine is not left billing
        except Exception:  # noqa: BLE001
            log.exception("terminate %s after a failed launch", row.name)
        return True
    Instance.objects.filter(pk=row.pk, state=Instance.State.PENDING).update(
        state=Instance.State.PROVISIONING, message=f"launched on {provider.name}; waiting for its agent to register")
    return True


def _fail(row: Instance, now: datetime, message: str, *, capacity: bool) -> None:
    """A launch that did not happen (FAILED is only that: lost machines end TERMINATED)."""
    Instance.objects.filter(pk=row.pk).update(state=Instance.State.FAILED, capacity_error=capacity,
                                              message=message[:500], terminated_at=now)


def _observe(row: Instance, provider, now: datetime) -> bool:
    try:
        info = provider.get(row.name)
    except Exception as exc:  # noqa: BLE001 - the provider's API is down: observe again next pass
        log.warning("get %s failed: %s", row.name, exc)
        return False
    if info is None or info.state in GONE:
        state = "preempted" if info is not None and info.state == PREEMPTED else "gone"
        detail = (info.message if info else "") or f"the provider reports the instance {state}"
        _terminate(row, provider, now, detail)
        return True
    started = row.launched_at or row.created_at
    if row.worker_id is None and started and now - started > timedelta(seconds=settings.CLOUD_BOOT_DEADLINE_S):
        _terminate(row, provider, now, f"its agent did not register within {settings.CLOUD_BOOT_DEADLINE_S} s; replaced")
        return True
    return False


def _terminate(row: Instance, provider, now: datetime, message: str) -> None:
    try:
        provider.terminate(row.name)
    except Exception as exc:  # noqa: BLE001 - stays terminating (and billed) until a later pass succeeds
        log.warning("terminate %s failed: %s", row.name, exc)
        Instance.objects.filter(pk=row.pk).update(state=Instance.State.TERMINATING, message=f"terminate failed: {exc}"[:500])
        return
    Instance.objects.filter(pk=row.pk).update(state=Instance.State.TERMINATED, message=message[:500], terminated_at=now)
    if row.worker_id:
        worker = Worker.objects.filter(pk=row.worker_id).first()
        if worker is not None:
            services.worker_delete(worker=worker)  # its replicas (if any) are placed elsewhere


def terminate_for_workload(workload, reason: str = "its workload was deleted") -> list[str]:
    """Mark every billed instance of the workload terminating (a delete; call in its transaction)
    and queue the provider calls after commit. Returns the instance names."""
    rows = Instance.objects.filter(workload=workload, state__in=BILLED)
    names = list(rows.values_list("name", flat=True))
    if names:  # most workloads never had one: no write for them
        Instance.objects.filter(name__in=names).update(state=Instance.State.TERMINATING, message=reason)
        tasks.send_on_commit("workers.tasks.terminate_instances", [names])
    return names


def terminate_named(names: list[str], provider=None) -> None:
    provider = provider or providers.get_provider()
    now = timezone.now()
    for row in Instance.objects.filter(name__in=names, state__in=BILLED):
        _terminate(row, provider, now, row.message or "terminated")


def sweep(now: datetime | None = None, provider=None) -> dict:
    """Beat: observe every billed instance (boot deadlines, preemptions), terminate the billed
    ones no workload wants, and terminate machines the provider runs for us that no row bills
    (leftovers of a crash between a launch and its row). Returns counts."""
    now = now or timezone.now()
    provider = provider or providers.get_provider()
    orphaned = 0
    orphans = Instance.objects.filter(state__in=ACTIVE, workload__isnull=True)
    if orphans.exists():  # a steady sweep writes nothing
        with transaction.atomic():
            orphaned = orphans.update(state=Instance.State.TERMINATING, message="no workload wants it")
    changed_workloads = set(Instance.objects.filter(state__in=BILLED, provider=provider.name)
                            .exclude(workload=None).values_list("workload_id", flat=True))
    changed = execute(None, now, provider)
    known = set(Instance.objects.filter(state__in=BILLED, provider=provider.name).values_list("name", flat=True))
    leftovers = 0
    try:
        found = provider.list({MANAGED_LABEL: "true"})
    except Exception as exc:  # noqa: BLE001 - the provider's API is down: the next sweep looks again
        log.warning("capacity sweep: listing instances failed: %s", exc)
        found = []
    for info in found:
        if info.name not in known and info.state not in GONE:
            log.warning("capacity sweep: terminating %s (no instance row bills it)", info.name)
            try:
                provider.terminate(info.name)
                leftovers += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("capacity sweep: terminate %s failed: %s", info.name, exc)
    if changed:
        for workload_id in sorted(changed_workloads):
            tasks.send("workloads.tasks.reconcile_workload", [workload_id])
    # A cloud worker whose instance is gone (or whose agent registered after its instance was given
    # up) is a row nobody will use again once it is quiet.
    quiet = now - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S)
    stale = Worker.objects.filter(kind=Worker.Kind.CLOUD, last_heartbeat_at__lt=quiet).filter(
        Q(instance__isnull=True) | ~Q(instance__state__in=ACTIVE))
    removed = 0
    for worker in list(stale[:100]):
        services.worker_delete(worker=worker)
        removed += 1
    return {"orphaned": orphaned, "leftovers": leftovers, "stale_workers": removed}


# --- reads for the API and dashboard ---------------------------------------------------------

def hourly_cost_usd(workload_id: str) -> Decimal:
    """What the workload's instances cost per hour right now (every billed instance)."""
    rows = Instance.objects.filter(workload_id=workload_id, state__in=BILLED).values_list("price_usd_per_hour", flat=True)
    return sum(rows, Decimal(0))


def cost_to_date_usd(workload_id: str, now: datetime | None = None) -> float:
    """What the workload's instances have cost so far (launch to termination, or now)."""
    now = now or timezone.now()
    return sum(row.cost_usd(now) for row in Instance.objects.filter(workload_id=workload_id).exclude(launched_at=None))
