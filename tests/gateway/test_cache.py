"""The gateway's loading cache: single-flight loads, TTL, refresh-ahead, nothing served past the TTL."""
from __future__ import annotations

import asyncio

from gateway.cache import LoadingCache


def make(ttl=0.05, **kwargs):
    calls = []
    values = {"k": "v1"}

    async def loader(key):
        calls.append(key)
        await asyncio.sleep(0.01)
        return values.get(key)

    return LoadingCache(loader, ttl=ttl, **kwargs), calls, values


def test_concurrent_misses_share_one_load():
    async def go():
        cache, calls, _ = make()
        results = await asyncio.gather(*(cache.get("k", "k") for _ in range(20)))
        assert results == ["v1"] * 20
        assert calls == ["k"]
        assert await cache.get("k", "k") == "v1" and calls == ["k"]  # fresh: no load

    asyncio.run(go())


def test_ageing_entry_is_served_while_one_refresh_runs():
    async def go():
        cache, calls, values = make(ttl=0.2)
        await cache.get("k", "k")
        values["k"] = "v2"
        await asyncio.sleep(0.12)  # past ttl/2, before ttl
        assert await cache.get("k", "k") == "v1"  # refresh started in the background
        assert await cache.get("k", "k") == "v1"  # no second refresh
        await asyncio.sleep(0.03)
        assert await cache.get("k", "k") == "v2"
        assert calls == ["k", "k"]

    asyncio.run(go())


def test_positive_entry_is_never_served_past_its_ttl():
    async def go():
        cache, calls, values = make(ttl=0.05)
        assert await cache.get("k", "k") == "v1"
        values["k"] = None  # revoked
        await asyncio.sleep(0.06)  # idle past the ttl: the next callers wait for the load
        assert await asyncio.gather(*(cache.get("k", "k") for _ in range(100))) == [None] * 100
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


def test_failed_loads_propagate():
    async def go():
        async def broken(key):
            raise RuntimeError("db down")

        failing = LoadingCache(broken, ttl=1)
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
