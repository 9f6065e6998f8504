"""One database poller per process (per event loop) for every open readiness stream.

Each SSE stream used to poll the database itself from a worker thread, and each such thread kept
its connection: 12 waiting streams held 12 connections, past the PostgreSQL pool (10), and the
whole control plane answered 500. Here one task polls for all watched workloads at once (a cheap
fingerprint query, then a snapshot only of the workloads that moved), returns its connection after
every poll, and wakes the streams whose workload changed. A waiting stream holds no connection.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

log = logging.getLogger(__name__)

POLL_S = 0.1
_EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="readiness-poll")  # one poll at a time, whatever the streams


class Watch:
    """One stream's view of one workload: the latest snapshot, and a flag raised when it changes."""

    def __init__(self, workload_id: str):
        self.workload_id = workload_id
        self.snapshot = None
        self._changed = asyncio.Event()

    def _publish(self, snapshot) -> None:
        self.snapshot = snapshot
        self._changed.set()

    async def next(self, timeout: float | None = None):
        """The latest snapshot once it changed since the last call; after `timeout`, the same one."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
        self._changed.clear()
        return self.snapshot


class Notifier:
    def __init__(self, fingerprints: Callable[[list[str]], dict], snapshot: Callable[[str], object]):
        self._fingerprints, self._snapshot = fingerprints, snapshot
        self._watches: dict[str, set[Watch]] = {}
        self._latest: dict[str, tuple] = {}  # workload id → (fingerprint, snapshot)
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def watch(self, workload_id: str) -> Watch:
        watch = Watch(workload_id)
        self._watches.setdefault(workload_id, set()).add(watch)
        if workload_id in self._latest:
            watch._publish(self._latest[workload_id][1])
        else:
            self._wake.set()  # poll now rather than at the next tick
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.workload_id)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.workload_id]
            self._latest.pop(watch.workload_id, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watches:
            ids = list(self._watches)
            known = {wid: self._latest[wid][0] for wid in ids if wid in self._latest}
            try:
                changed = await loop.run_in_executor(_EXECUTOR, self._poll, ids, known)
            except Exception:
                log.exception("readiness poll failed; retrying")
                changed = {}
                await asyncio.sleep(1)
            for wid, (fingerprint, snapshot) in changed.items():
                if wid in self._watches:
                    self._latest[wid] = (fingerprint, snapshot)
                    for watch in self._watches[wid]:
                        watch._publish(snapshot)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
        self._task = None

    def _poll(self, ids: list[str], known: dict[str, tuple]) -> dict[str, tuple]:
        """(In the poll thread.) Snapshots of the workloads whose fingerprint moved (None: deleted)."""
        try:
            fingerprints = self._fingerprints(ids)
            out = {}
            for wid in ids:
                fingerprint = fingerprints.get(wid)
                if wid in known and known[wid] == fingerprint:
                    continue
                out[wid] = (fingerprint, self._snapshot(wid) if fingerprint is not None else (None, []))
            return out
        finally:
            if not connection.in_atomic_block:
                connection.close()  # back to the pool (PostgreSQL) / file closed (SQLite) until the next poll


_NOTIFIERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def for_running_loop(fingerprints: Callable, snapshot: Callable) -> Notifier:
    """The notifier of the running event loop (uvicorn has one; tests may run several in turn)."""
    loop = asyncio.get_running_loop()
    notifier = _NOTIFIERS.get(loop)
    if notifier is None:
        notifier = _NOTIFIERS[loop] = Notifier(fingerprints, snapshot)
    return notifier
