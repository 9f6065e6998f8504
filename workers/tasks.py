"""Celery tasks for cloud capacity: the beat sweep over instances, and terminations after a delete."""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

log = logging.getLogger(__name__)


@shared_task(ignore_result=True, expires=60)
def capacity_sweep() -> None:
    """Observe billed instances (boot deadlines, preemptions) and terminate what no workload wants."""
    from . import capacity

    try:
        counts = capacity.sweep()
    except OperationalError as exc:
        log.warning("capacity sweep skipped: database error (%s); the next sweep runs soon", exc)
        return
    if any(counts.values()):
        log.info("capacity sweep: %s", counts)


@shared_task(ignore_result=True, acks_late=True)
def terminate_instances(names: list[str]) -> None:
    """Terminate the named instances (a deleted workload's); idempotent, the sweep retries failures."""
    from . import capacity

    capacity.terminate_named(names)
