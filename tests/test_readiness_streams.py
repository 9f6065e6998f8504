"""Readiness SSE streams (`wait_until_ready`) against a real ASGI server: a waiting stream holds no
database connection, the API answers while many streams wait, streams are capped per token, and
a stream the client abandons is let go."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from django.db import connection

from inferencekey_web.asgi import application
from workloads import notifier, readiness
from workloads.models import Phase, Workload

from .specs import vllm_spec

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 15  # more than the PostgreSQL pool's 10 connections


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(transactional_db):
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)


@pytest.fixture
def waiting(api, tenant):
    """A workload that stays in `scheduling` (nothing reconciles it here)."""
    return api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()


def held_connections() -> int:
    """Database connections this process holds: checked out of the PostgreSQL pool, or SQLite handles."""
    if connection.vendor == "postgresql":
        if not connection.settings_dict["OPTIONS"].get("pool"):
            pytest.skip("needs the psycopg pool (DB_POOL=1) to count checked-out connections")
        stats = connection.pool.get_stats()
        return stats["pool_size"] - stats["pool_available"]
    name = os.path.realpath(connection.settings_dict["NAME"])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == name
        except OSError:
            pass
    return count


def watching() -> int:
    return sum(n.watching for n in list(notifier._NOTIFIERS.values()))


async def _open_streams(base: str, token: str, n: int, *, first_frames: list) -> tuple[httpx.AsyncClient, list]:
    client = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    responses = []
    for _ in range(n):
        response = await client.send(client.build_request("GET", "/api/projects/demo/workloads/support-bot/readiness-events"),
                                     stream=True)
        responses.append(response)
    for response in responses:
        if response.status_code == 200:
            # Kept on the response: a line iterator that is garbage-collected closes its connection.
            response.lines = response.aiter_lines()
            line = await asyncio.wait_for(anext(response.lines), 10)
            first_frames.append(json.loads(line.removeprefix("data: ")))
    return client, responses


def test_waiting_streams_hold_no_database_connection_and_the_api_answers(server, tenant, waiting):
    connection.close()
    baseline = held_connections()

    async def main():
        frames: list = []
        client, responses = await _open_streams(server, tenant.sdk_token, STREAMS, first_frames=frames)
        try:
            assert [r.status_code for r in responses] == [200] * STREAMS
            assert {f["phase"] for f in frames} == {"scheduling"}
            await asyncio.sleep(1)  # several polls
            held = await asyncio.to_thread(held_connections)
            async with httpx.AsyncClient(base_url=server, timeout=10,
                                         headers={"Authorization": f"Bearer {tenant.sdk_token}"}) as api:
                answers = await asyncio.gather(*[api.get("/api/workloads/support-bot") for _ in range(12)])
            return held, [a.status_code for a in answers]
        finally:
            for r in responses:
                await r.aclose()
            await client.aclose()

    held, statuses = asyncio.run(main())
    assert held <= baseline + 1  # at most the shared poller, mid-poll
    assert statuses == [200] * 12


def test_streams_past_the_per_token_cap_are_429(server, tenant, waiting, settings):
    settings.READINESS_MAX_STREAMS_PER_TOKEN = 3
    token_id = _token_id(tenant)

    async def main():
        client, responses = await _open_streams(server, tenant.sdk_token, 4, first_frames=[])
        try:
            body = json.loads(await responses[-1].aread())
            await responses[0].aclose()  # one slot back
            await _until(lambda: readiness._OPEN.get(token_id) == 2)
            _, [again] = await _open_streams(server, tenant.sdk_token, 1, first_frames=[])
            responses.append(again)
            return [r.status_code for r in responses], body
        finally:
            for r in responses:
                await r.aclose()
            await client.aclose()

    statuses, body = asyncio.run(main())
    assert statuses == [200, 200, 200, 429, 200]
    assert body["code"] == "too_many_streams" and "at most 3" in body["error"]


def test_abandoned_streams_are_let_go(server, tenant, waiting):
    token_id = _token_id(tenant)
    before = watching()  # notifiers of earlier tests' servers may still count theirs

    async def main():
        client, responses = await _open_streams(server, tenant.sdk_token, 5, first_frames=[])
        opened = watching() - before, readiness._OPEN.get(token_id)
        for r in responses:
            await r.aclose()
        await client.aclose()
        await _until(lambda: watching() == before and token_id not in readiness._OPEN)
        return opened

    assert asyncio.run(main()) == (5, 5)


def test_stream_follows_the_workload_to_ready(server, tenant, waiting):
    async def main():
        frames: list = []
        client, [response] = await _open_streams(server, tenant.sdk_token, 1, first_frames=frames)
        try:
            await asyncio.to_thread(_mark_ready, waiting["id"])
            async with asyncio.timeout(10):
                async for line in response.lines:
                    if line.startswith("data: "):
                        frames.append(json.loads(line.removeprefix("data: ")))
            return frames
        finally:
            await response.aclose()
            await client.aclose()

    frames = asyncio.run(main())
    assert frames[0]["phase"] == "scheduling" and frames[-1]["phase"] == "ready"


def _mark_ready(workload_id: str) -> None:
    try:
        Workload.objects.filter(pk=workload_id).update(observed_generation=1, phase=Phase.READY, message="1 of 1 replica(s) ready")
    finally:
        connection.close()  # this worker thread's own connection


def _token_id(tenant) -> str:
    from accounts.models import SdkToken

    return SdkToken.objects.get(lookup_id=tenant.sdk_token.split("_")[2]).pk


async def _until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)

