"""Workload writes: create, update (PATCH), delete. Each bumps `generation` on a spec change
and queues a reconcile after commit."""
from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Project
from catalog.offers import price_by_gpu
from catalog.selectors import close_matches, gpu_names
from inferencekey_web.lib import tasks
from workers import capacity
from workers.models import Gpu, Worker

from . import policies
from . import spec as specs
from .models import Phase, ReadinessEvent, Workload


class SlugTaken(Exception):
    pass


def spec_context(project: Project) -> specs.SpecContext:
    team_id = project.team_id
    # The team's own workers and, when sharing is on, the shared ones (no team: e.g. `up`'s local
    # worker) may be pinned.
    shared = settings.ALLOW_SHARED_WORKER
    usable = Q(team_id=team_id) | Q(team__isnull=True) if shared else Q(team_id=team_id)
    gpu_usable = Q(worker__team_id=team_id) | Q(worker__team__isnull=True) if shared else Q(worker__team_id=team_id)

    def gpu_on_worker(gpu_id: str, worker_id: str | None):
        row = Gpu.objects.filter(gpu_usable, pk=gpu_id).values_list("worker_id", flat=True).first()
        if row is None:
            return None
        return worker_id is None or row == worker_id

    return specs.SpecContext(
        gpu_catalog=gpu_names,
        gpu_prices=price_by_gpu,
        suggest=close_matches,
        worker_exists=lambda worker_id: Worker.objects.filter(usable, pk=worker_id).exists(),
        gpu_on_worker=gpu_on_worker,
        custom_backends=lambda: custom_backends_for(project),
    )


def custom_backends_for(project: Project) -> dict[str, str]:
    """Custom backend slug → task type for the project's team (the custom-backends issue fills this)."""
    return {}


def wire_of(workload: Workload) -> dict:
    return {name: getattr(workload, name) for name in specs.WIRE_FIELDS}


def _queue_reconcile(workload: Workload) -> None:
    """Queue the reconcile after commit. A broker that is down does not fail the write: the
    workload's message says reconciliation is delayed and the beat sweep catches up."""

    def delayed(exc: Exception) -> None:
        workload.message = tasks.RECONCILE_DELAYED
        Workload.objects.filter(pk=workload.pk, observed_generation__lt=F("generation")).update(message=workload.message)

    tasks.send_on_commit("workloads.tasks.reconcile_workload", [workload.id], on_failure=delayed)


def workload_create(*, project: Project, data: dict) -> Workload:
    spec = specs.validate(data, spec_context(project))
    try:
        with transaction.atomic():
            workload = Workload.objects.create(project=project, policy=spec.policy, **spec.wire(),
                                               next_transition_at=policies.next_change(spec.policy, timezone.now()))
            ReadinessEvent.objects.create(workload=workload, generation=1, phase=Phase.SCHEDULING,
                                          step="accepted", message="Workload accepted; waiting for the reconciler")
            _queue_reconcile(workload)
    except IntegrityError:
        # The unique (project, slug) constraint decides concurrent creates, not luck.
        raise SlugTaken(spec.slug) from None
    return workload


def workload_update(*, workload: Workload, patch: dict) -> Workload:
    current = wire_of(workload)
    merged = specs.merge_patch(current, patch)
    spec = specs.validate(merged, spec_context(workload.project))
    new = spec.wire()
    if new == current and spec.policy == workload.policy:
        return workload  # nothing changed: no write, updated_at and generation stay
    try:
        with transaction.atomic():
            changed = Workload.objects.filter(pk=workload.pk, generation=workload.generation).update(
                policy=spec.policy, generation=F("generation") + 1, updated_at=timezone.now(), **new,
                next_transition_at=policies.next_change(spec.policy, timezone.now()),
            )
            if not changed:
                raise Conflict("the workload changed concurrently; retry")
            if not capacity.is_cloud(spec.policy):
                capacity.terminate_for_workload(workload, "the workload no longer runs on cloud capacity")
            _queue_reconcile(workload)
    except IntegrityError:
        raise SlugTaken(spec.slug) from None
    workload.refresh_from_db()
    return workload


class Conflict(Exception):
    pass


def workload_delete(*, workload: Workload) -> None:
    """Delete the workload; its replicas are marked undesired so agents stop them (rows go
    once the agent confirms), which frees their GPUs and ports."""
    from workers.models import Replica

    with transaction.atomic():
        Replica.objects.filter(workload=workload).update(desired=False)
        capacity.terminate_for_workload(workload)  # cloud instances are terminated after commit
        workload.delete()
