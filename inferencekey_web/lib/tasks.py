"""Queue Celery tasks after commit without letting an unreachable broker fail the request.

The row is the truth and the beat sweep re-queues whatever lags, so a write whose task could not
be queued is still a success: the caller answers 201/200 and says reconciliation is delayed.
Tasks are sent by name so any app can use this (imports point one way).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction
from kombu.exceptions import KombuError

log = logging.getLogger(__name__)

RECONCILE_DELAYED = ("Saved; reconciliation is delayed: the task queue (Celery broker) is unreachable. "
                     "The periodic sweep picks this up once it is back.")


def send(name: str, args: list, on_failure: Callable[[Exception], None] | None = None) -> bool:
    """Send task `name`; on a broker error log it, call `on_failure` and return False."""
    from celery import current_app

    try:
        current_app.send_task(name, args=args)
        return True
    except (KombuError, OSError) as exc:  # kombu wraps transport errors; OSError: refused, disk, DNS
        log.warning("could not queue %s%s (broker unreachable: %s); the sweep will catch up", name, tuple(args), exc)
        if on_failure is not None:
            on_failure(exc)
        return False


def send_on_commit(name: str, args: list, on_failure: Callable[[Exception], None] | None = None) -> None:
    transaction.on_commit(lambda: send(name, args, on_failure))
