"""Celery tasks: reconcile one workload (queued on commit after every change) and the sweep."""
from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(ignore_result=True, acks_late=True)
def reconcile_workload(workload_id: str) -> None:
    """Converge one workload's replicas to its spec. Safe to run twice, safe to crash anywhere."""
    from . import reconcile

    reconcile.run(workload_id)


@shared_task(ignore_result=True, expires=30)
def sweep() -> None:
    """Re-queue workloads whose observed state lags their spec or whose replicas are unhealthy."""
    from . import reconcile

    for workload_id in reconcile.lagging_workloads():
        reconcile_workload.delay(workload_id)
