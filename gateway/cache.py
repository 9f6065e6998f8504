"""A small in-process loading cache: TTL, single-flight loads, refresh-ahead.

The gateway's hot path reads keys and route tables from here, so the database sees at most one
query batch per entry per TTL, however many requests arrive:

* fresh (age < ttl / 2): returned as is;
* ageing (ttl / 2 <= age < ttl): returned at once, and one background refresh is started, so an
  entry in steady use is renewed before it expires and callers never wait for the database;
* expired (age >= ttl), or missing: the caller waits for the load. Concurrent callers share one
  load. Nothing is ever served past `ttl`, positive or negative: a revoked key or a replica that
  went away stops being used within `ttl` however idle the entry was (README: "about 1 s").

An entry's age counts from when its load *started*: a row changed while the query ran is not
trusted for a full extra `ttl`.

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
        max_entries: int = 100_000,
        name: str = "cache",
    ) -> None:
        self._loader = loader
        self.ttl = ttl
        self.refresh_after = ttl / 2
        self.max_entries = max_entries
        self.name = name
        self._entries: dict[Hashable, tuple[Any, float]] = {}
        self._pending: dict[Hashable, asyncio.Future] = {}

    async def get(self, key: Hashable, *args: Any) -> Any:
        entry = self._entries.get(key)
        if entry is not None:
            value, loaded_at = entry
            age = time.monotonic() - loaded_at
            if age < self.refresh_after:
                return value
            if age < self.ttl:
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
        started = time.monotonic()
        try:
            value = await self._loader(*args)
            if len(self._entries) >= self.max_entries:
                self._evict()
            self._entries[key] = (value, started)
            return value
        finally:
            if self._pending.get(key) is asyncio.current_task():
                del self._pending[key]

    def _evict(self) -> None:
        cutoff = time.monotonic() - self.ttl
        for k in [k for k, (_, at) in self._entries.items() if at < cutoff]:
            del self._entries[k]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()

    def _log_background_failure(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("%s: background refresh failed (the entry expires at its ttl): %r", self.name,
                        future.exception())

    def put(self, key: Hashable, value: Any) -> None:
        """Store a value loaded elsewhere (the wake poller's fresher route), aged from now."""
        self._entries[key] = (value, time.monotonic())

    def invalidate(self, key: Hashable | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
