"""The gateway's loading cache: single-flight loads, TTL, stale-while-revalidate."""
from __future__ import annotations

import asyncio

from gateway.cache import LoadingCache


def make(ttl=0.05, max_stale=10.0, **kwargs):
    calls = []
    values = {"k": "v1"}

    async def loader(key):
        calls.append(key)
        await asyncio.sleep(0.01)
        return values.get(key)

    return LoadingCache(loader, ttl=ttl, max_stale=max_stale, **kwargs), calls, values


def test_concurrent_misses_share_one_load():
    async def go():
        cache, calls, _ = make()
        results = await asyncio.gather(*(cache.get("k", "k") for _ in range(20)))
        assert results == ["v1"] * 20
        assert calls == ["k"]
        assert await cache.get("k", "k") == "v1" and calls == ["k"]  # fresh: no load

    asyncio.run(go())


def test_stale_positive_is_served_while_one_refresh_runs():
    async def go():
        cache, calls, values = make()
        await cache.get("k", "k")
        values["k"] = "v2"
        await asyncio.sleep(0.06)
        assert await cache.get("k", "k") == "v1"  # stale, refresh started in the background
        assert await cache.get("k", "k") == "v1"  # still stale, no second refresh
        await asyncio.sleep(0.02)
        assert await cache.get("k", "k") == "v2"
        assert calls == ["k", "k"]

    asyncio.run(go())


def test_negative_entries_are_reloaded_as_soon_as_they_expire():
    async def go():
        cache, calls, values = make()
        assert await cache.get("new", "new") is None
        values["new"] = "now exists"
        await asyncio.sleep(0.06)
        assert await cache.get("new", "new") == "now exists"

    asyncio.run(go())


def test_too_stale_entries_are_waited_for_and_failures_propagate():
    async def go():
        cache, calls, values = make(ttl=0.01, max_stale=0.02)
        await cache.get("k", "k")
        values["k"] = "v2"
        await asyncio.sleep(0.03)
        assert await cache.get("k", "k") == "v2"

        async def broken(key):
            raise RuntimeError("db down")

        failing = LoadingCache(broken, ttl=1, max_stale=1)
        try:
            await failing.get("k", "k")
        except RuntimeError as exc:
            assert str(exc) == "db down"
        else:
            raise AssertionError("expected the loader's error")

    asyncio.run(go())


def test_entries_survive_across_event_loops():
    cache, calls, _ = make(ttl=60)
    assert asyncio.run(cache.get("k", "k")) == "v1"
    assert asyncio.run(cache.get("k", "k")) == "v1"
    assert calls == ["k"]
