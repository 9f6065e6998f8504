"""Scale from zero at the gateway: hold requests for a workload with no ready replica, and publish
this process's demand for the autoscaler.

* `Holder.wait(...)`: a request for a workload with no ready replica (scaled to zero, starting) is
  parked on the workload's `_Wake` (one asyncio Event per workload), counted as `held` demand, and
  released when a poller (one per held workload, reading the route table every POLL_S, the same
  loader as the ~1 s route cache) sees a ready replica; the first held request queues the autoscaler
  for that workload at once (off the event loop). It ends with 503 `cold_start_timeout` after
  COLD_START_HOLD_S, or at once with 503 `workload_error` when the workload's phase becomes `error`.
  A scheduled workload outside its window is answered 503 `outside_schedule` (never woken); a
  workload stopped on purpose (fixed 0) keeps the plain 503 `no_ready_replica`.
* `DemandPublisher`: a background task that copies this process's counters (gateway/metrics.py) to
  the shared store (workloads/demand.py) about once a second, only what changed plus a refresh of
  non-zero counts; the request path only bumps in-memory integers.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from inferencekey_web.lib import tasks
from workloads import demand

from . import metrics
from .directory import Route

log = logging.getLogger(__name__)

POLL_S = 0.2  # route reads while someone is held (one query per held workload and process)
FLUSH_S = 1.0
TRIGGER_S = 2.0  # a workload's autoscaler is queued by the publisher at most this often
PROCESS = f"{socket.gethostname()[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_PHASE_ERROR = "error"
_PHASE_STOPPED = "stopped"


class HoldRefused(Exception):
    """The request is answered now: (status, error code, detail, retry_after_s)."""

    def __init__(self, status: int, error: str, detail: str, retry_after: int | None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.retry_after = status, error, detail, retry_after


def check(route: Route, now: float | None = None) -> None:
    """Raise HoldRefused when a request for this route (no ready replica) must not be held."""
    if route.opens_at is not None:
        wait = route.opens_at - (time.time() if now is None else now)
        retry = 86400 if math.isinf(wait) else max(1, math.ceil(wait))
        raise HoldRefused(503, "outside_schedule", f"workload {route.slug} is outside its schedule's active period",
                          retry)
    if route.phase == _PHASE_ERROR:
        raise HoldRefused(503, "workload_error", route.message or f"workload {route.slug} failed", None)
    if route.phase == _PHASE_STOPPED:
        raise HoldRefused(503, "no_ready_replica", f"workload {route.slug} has no ready replica", 5)


class _Wake:
    __slots__ = ("event", "route", "held", "poller")

    def __init__(self, route: Route) -> None:
        self.event = asyncio.Event()
        self.route = route
        self.held = 0
        self.poller: asyncio.Task | None = None


class Holder:
    def __init__(self, load_route, put_route, hold_s: float) -> None:
        self._load = load_route  # async (project_id, segment) -> Route | None
        self._put = put_route  # stores a fresher route in the gateway's cache
        self.hold_s = hold_s
        self._wakes: dict[str, _Wake] = {}

    async def wait(self, route: Route, cache_key: tuple) -> Route:
        """Hold until `route` has a ready replica; return the fresh route (or raise HoldRefused)."""
        check(route)
        wid = route.workload_id
        wake = self._wakes.get(wid)
        if wake is None or wake.poller is None or wake.poller.done():
            wake = self._wakes[wid] = _Wake(route)
            wake.poller = asyncio.ensure_future(self._poll(wake, cache_key))
        wake.held += 1
        if metrics.held_add(wid, 1) == 1 and route.autoscaling:
            _trigger(wid)  # the first held request wakes it at once; beat would within a tick
        deadline = time.monotonic() + self.hold_s
        try:
            while True:
                fresh = wake.route
                if fresh.targets:
                    return fresh
                check(fresh)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HoldRefused(503, "cold_start_timeout",
                                      f"workload {route.slug} had no ready replica within {self.hold_s:g} s", 30)
                try:
                    async with asyncio.timeout(remaining):
                        await wake.event.wait()
                except TimeoutError:
                    pass
        finally:
            wake.held -= 1
            metrics.held_add(wid, -1)
            if wake.held == 0 and wake.poller is not None:
                wake.poller.cancel()
                if self._wakes.get(wid) is wake:
                    del self._wakes[wid]

    async def _poll(self, wake: _Wake, cache_key: tuple) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                route = await self._load(*cache_key)
            except Exception as exc:  # the database blinked: keep holding, try again
                log.warning("gateway: route poll for %s failed: %r", wake.route.slug, exc)
                continue
            if route is None:
                route = Route(wake.route.workload_id, wake.route.slug, "", "", "", (), phase=_PHASE_ERROR,
                              message="the workload was deleted")
            wake.route = route
            if route.targets or route.phase in (_PHASE_ERROR, _PHASE_STOPPED) or route.opens_at is not None:
                if route.targets:
                    self._put(cache_key, route)
                wake.event.set()
                wake.event = asyncio.Event()  # later holders (none yet released) wait on a new one
                if route.targets:
                    return


def publish_sync(process: str, counts: dict[str, demand.Counts]) -> None:
    """demand.publish from a gateway thread, with Django's request rules for connections."""
    close_old_connections()
    try:
        demand.publish(process, counts)
    finally:
        close_old_connections()


def _trigger(workload_id: str) -> None:
    """Publish this process's demand for the workload and queue its autoscaler, off the loop."""
    inflight, held, _ = metrics.demand_snapshot().get(workload_id, (0, 1, 0))
    counts = {workload_id: demand.Counts(inflight, held, time.time())}

    def run() -> None:
        try:
            publish_sync(PROCESS, counts)
        except Exception:
            log.exception("gateway: could not publish demand for %s", workload_id)
        tasks.send("workloads.tasks.autoscale", [workload_id])

    asyncio.get_running_loop().run_in_executor(None, run)


class DemandPublisher:
    """Copies this process's demand to the shared store about once a second."""

    def __init__(self) -> None:
        self._published: dict[str, tuple[int, int, int, float | None, float]] = {}
        self.routes: dict[str, Route] = {}  # autoscaling workloads this process served (latest route)
        self._triggered: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self.loop = None  # the event loop its task runs on (the gateway checks it per request)

    def ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self.loop is not loop:
            self.loop = loop
            self._task = loop.create_task(self._run())

    def stop(self) -> None:
        self.loop = None
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        publish = sync_to_async(publish_sync, thread_sensitive=False)
        send = sync_to_async(tasks.send, thread_sensitive=False)
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                now = time.time()
                changes = self.changes(now)
                if changes:
                    await publish(PROCESS, changes)
                for wid in self.overloaded(changes, now):
                    await send("workloads.tasks.autoscale", [wid])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gateway: demand publish failed (retried next second): %r", exc)
                self._published.clear()  # publish everything again next time

    def overloaded(self, changes: dict[str, demand.Counts], now: float) -> list[str]:
        """Autoscaling workloads whose demand through this process alone exceeds what their ready
        replicas are sized for: queue their autoscaler now rather than at the next beat pass (a
        step of load reaches a decision within about a second). At most every TRIGGER_S each."""
        out = []
        for wid, c in changes.items():
            route = self.routes.get(wid)
            if route is None or not route.per_replica or len(route.targets) >= route.max_replicas:
                continue
            if c.inflight + c.held > route.per_replica * len(route.targets) and now - self._triggered.get(wid, 0.0) >= TRIGGER_S:
                self._triggered[wid] = now
                out.append(wid)
        return out

    def changes(self, now: float) -> dict[str, demand.Counts]:
        out: dict[str, demand.Counts] = {}
        for wid, (inflight, held, total) in metrics.demand_snapshot().items():
            last = self._published.get(wid)
            last_request_at = last[3] if last else None
            if last is None or total != last[2]:
                last_request_at = now if total else last_request_at
            changed = last is None or (inflight, held) != last[:2] or last_request_at != last[3]
            refresh = (inflight or held) and last is not None and now - last[4] >= demand.REFRESH_S
            if changed or refresh:
                out[wid] = demand.Counts(inflight, held, last_request_at)
                self._published[wid] = (inflight, held, total, last_request_at, now)
        return out
