"""Celery tasks: reconcile one workload (queued on commit after every change) and the sweep."""
from __future__ import annotations

import logging
import random

from celery import shared_task
from django.db import OperationalError

from inferencekey_web.lib import tasks

log = logging.getLogger(__name__)

# OperationalErrors worth another try: a busy SQLite file, a full or restarting PostgreSQL pool,
# serialization failures. Anything else (a missing table, bad SQL) fails the task at once.
_TRANSIENT = ("database is locked", "database table is locked", "could not serialize", "deadlock detected",
              "couldn't get a connection", "connection", "server closed", "timeout", "terminating")
MAX_RETRIES = 8


def transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(marker in str(exc).lower() for marker in _TRANSIENT)


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=MAX_RETRIES)
def reconcile_workload(self, workload_id: str) -> None:
    """Converge one workload's replicas to its spec. Safe to run twice, safe to crash anywhere;
    a transient database error is retried with backoff (the sweep would also catch up)."""
    from . import reconcile

    try:
        reconcile.run(workload_id)
    except OperationalError as exc:
        if not transient(exc):
            raise
        delay = min(30.0, 0.5 * 2 ** self.request.retries) * random.uniform(0.5, 1.5)
        log.warning("reconcile %s: transient database error (%s); retry %d in %.1fs",
                    workload_id, exc, self.request.retries + 1, delay)
        raise self.retry(countdown=delay) from None


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=MAX_RETRIES)
def reconcile_batch(self, workload_ids: list[str]) -> None:
    """Converge many workloads (the sweep's share): settled ones in a few queries, the rest one by
    one (reconcile.run_many). Idempotent, so a transient database error retries the whole batch."""
    from . import reconcile

    try:
        reconcile.run_many(workload_ids)
    except OperationalError as exc:
        if not transient(exc):
            raise
        delay = min(30.0, 0.5 * 2 ** self.request.retries) * random.uniform(0.5, 1.5)
        log.warning("reconcile batch of %d: transient database error (%s); retry in %.1fs", len(workload_ids), exc, delay)
        raise self.retry(countdown=delay) from None


@shared_task(ignore_result=True, expires=30)
def sweep() -> None:
    """Reconcile workloads whose observed state lags their spec, whose schedule changes now, or
    whose replicas are unhealthy; in batches, so 10,000 due at once are not 10,000 tasks."""
    from . import reconcile

    try:
        lagging = reconcile.lagging_workloads()
    except OperationalError as exc:
        if not transient(exc):
            raise
        log.warning("sweep skipped: transient database error (%s); the next sweep runs soon", exc)
        return
    for start in range(0, len(lagging), reconcile.BATCH_SIZE):
        tasks.send("workloads.tasks.reconcile_batch", [lagging[start:start + reconcile.BATCH_SIZE]])


@shared_task(ignore_result=True, expires=30)
def autoscale(workload_id: str | None = None) -> None:
    """Run the autoscaler: for one workload (queued by a gateway holding a request for it), or for
    every private autoscaling workload (beat, every AUTOSCALE_INTERVAL_S)."""
    from . import autoscaling, demand

    try:
        if workload_id:
            autoscaling.tick(workload_id)
        else:
            autoscaling.tick_all()
            demand.forget_old()
    except OperationalError as exc:
        if not transient(exc):
            raise
        log.warning("autoscale skipped: transient database error (%s); the next pass runs soon", exc)
