"""A small in-process loading cache: TTL, single-flight loads, stale-while-revalidate.

The gateway's hot path reads keys and route tables from here, so the database sees at most one
query batch per entry per TTL, however many requests arrive:

* fresh (age < ttl): returned as is;
* stale (ttl <= age < max_stale) and positive: returned at once, and one background refresh is
  started (a revoked key or a replica that went away is therefore noticed within ttl plus one
  load). Negative entries (`None`: unknown key or workload; for routes also "no ready replica")
  are never served stale, so a new key, workload or replica is used as soon as its entry expires;
* older, or missing: the caller waits for the load. Concurrent callers share one load.

One event loop, no locks: every mutation happens between awaits.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class LoadingCache:
    def __init__(
        self,
        loader: Callable[..., Awaitable[Any]],
        *,
        ttl: float,
        max_stale: float,
        max_entries: int = 100_000,
        name: str = "cache",
        serve_stale: Callable[[Any], bool] | None = None,
    ) -> None:
        self._loader = loader
        self._serve_stale = serve_stale or (lambda value: value is not None)
        self.ttl = ttl
        self.max_stale = max(max_stale, ttl)
        self.max_entries = max_entries
        self.name = name
        self._entries: dict[Hashable, tuple[Any, float]] = {}
        self._pending: dict[Hashable, asyncio.Future] = {}

    async def get(self, key: Hashable, *args: Any) -> Any:
        entry = self._entries.get(key)
        if entry is not None:
            value, loaded_at = entry
            age = time.monotonic() - loaded_at
            if age < self.ttl:
                return value
            if age < self.max_stale and self._serve_stale(value):
                if key not in self._pending:
                    self._start(key, args).add_done_callback(self._log_background_failure)
                return value
        future = self._pending.get(key)
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            future = self._start(key, args)  # (a load left behind by a closed loop is dropped)
        # shield: a caller that goes away (client disconnect) must not cancel the shared load.
        return await asyncio.shield(future)

    def _start(self, key: Hashable, args: tuple) -> asyncio.Future:
        future = asyncio.ensure_future(self._load(key, args))
        self._pending[key] = future
        return future

    async def _load(self, key: Hashable, args: tuple) -> Any:
        try:
            value = await self._loader(*args)
            if len(self._entries) >= self.max_entries:
                self._evict()
            self._entries[key] = (value, time.monotonic())
            return value
        finally:
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]

    def _evict(self) -> None:
        cutoff = time.monotonic() - self.max_stale
        for k in [k for k, (_, at) in self._entries.items() if at < cutoff]:
            del self._entries[k]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()

    def _log_background_failure(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("%s: background refresh failed, serving stale: %r", self.name, future.exception())

    def invalidate(self, key: Hashable | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
