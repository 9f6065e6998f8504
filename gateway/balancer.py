"""Replica choice: least in-flight requests through this process, ties broken round-robin.

A replica whose engine could not be reached is put aside for a few seconds (`SUSPECT_S`): it is
chosen only when nothing else is ready, so a dead port costs one failed attempt, not one per
request until the agent reports it.
"""
from __future__ import annotations

import time

from . import metrics
from .directory import Route, Target

SUSPECT_S = 5.0
_SUSPECT_PENALTY = 1 << 30


class Balancer:
    def __init__(self) -> None:
        self._turn: dict[str, int] = {}  # workload_id -> round-robin counter
        self._suspect: dict[str, float] = {}  # replica_id -> monotonic deadline

    def pick(self, route: Route, avoid: str | None = None) -> Target | None:
        targets = route.targets
        n = len(targets)
        if n == 0:
            return None
        if n == 1:
            return targets[0]
        turn = self._turn.get(route.workload_id, 0)
        self._turn[route.workload_id] = turn + 1
        suspect = self._suspect
        now = time.monotonic() if suspect else 0.0
        best, best_load = None, 0
        for k in range(n):
            target = targets[(turn + k) % n]
            rid = target.replica_id
            if rid == avoid:
                continue
            load = metrics.replica_inflight(rid)
            if suspect:
                until = suspect.get(rid)
                if until is not None:
                    if until > now:
                        load += _SUSPECT_PENALTY
                    else:
                        del suspect[rid]
            if best is None or load < best_load:
                best, best_load = target, load
        return best if best is not None else targets[0]

    def mark_unreachable(self, replica_id: str) -> None:
        self._suspect[replica_id] = time.monotonic() + SUSPECT_S
