"""Many waiting readiness streams (`wait_until_ready`) against the real stack: the API, an agent
heartbeat and the gateway keep answering, and the web process's file descriptors come back to
their baseline once the streams are gone (on PostgreSQL, streams used to exhaust the pool)."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
from inferencekey import ManagementClient, WorkloadSpec

from .conftest import wait_for

pytestmark = pytest.mark.e2e

STREAMS = 60  # three tokens' worth at the per-token cap of 20; the bench runs 500 (bench/bench_sse.py)
HOLD_S = 6

MINT = """
import json
from accounts import services
from accounts.models import Project
from workers.services import join_token_create
project = Project.objects.get(team__slug="acme", slug="demo")
tokens = [services.sdk_token_create(project=project, name=f"sse-{i}").value for i in range(6)]
print(json.dumps({"tokens": tokens, "join": join_token_create(team=project.team, name="probe", accepts_cpu=True).value}))
"""


def _fds(pid: int, data_dir) -> tuple[int, int]:
    """(database handles, every other fd) of a process: connections to PostgreSQL's port, or the
    SQLite files; the first is bounded by the pool, the second must not grow."""
    url = urlparse(os.environ.get("DATABASE_URL", ""))
    db_port = (url.port or 5432) if url.scheme.startswith("postgres") else None
    remote_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            remote_port[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    database = other = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            is_db = db_port is not None and remote_port.get(target[8:-1]) == db_port
        else:
            is_db = target.startswith(str(data_dir / "db.sqlite3"))
        database += is_db
        other += not is_db
    return database, other


def test_sixty_waiting_streams_leave_api_heartbeat_and_gateway_answering(stack):
    base, creds = stack.base_url, stack.creds
    minted = json.loads(stack.manage("shell", "-c", MINT).splitlines()[-1])
    probe = httpx.post(f"{base}/api/agent/register", timeout=30,
                       json={"join_token": minted["join"], "hostname": "probe", "cpu_only": True}).json()
    worker_token = probe["worker_token"]
    mgmt = ManagementClient(base_url=base, sdk_token=creds["sdk_token"], project="demo")
    mgmt.ensure(WorkloadSpec(name="Served", slug="served", model="standin/tiny-chat", backend="vllm",
                             command="vllm serve standin/tiny-chat --max-model-len 512"))
    mgmt.wait_until_ready("served", timeout=90, silent=True)
    sdk = {"Authorization": f"Bearer {creds['sdk_token']}"}
    parked = httpx.post(f"{base}/api/projects/demo/workloads", headers=sdk, timeout=30, json={
        "name": "Parked", "slug": "parked", "model_name": "standin/tiny-chat", "backend": "vllm",
        "config": {"command": "vllm serve standin/tiny-chat"},
        # Pinned to the probe worker, which never runs it: the workload stays `provisioning`.
        "worker_id": probe["worker_id"]})
    assert parked.status_code == 201
    [web] = stack.children("uvicorn")

    calls = [("GET", "/api/workloads/served", creds["sdk_token"], None),
             ("POST", "/api/agent/heartbeat", worker_token, {"gpus": [], "replicas": []}),
             ("POST", "/endpoint/demo/served/v1/chat/completions", creds["api_key"],
              {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})]

    def probe_round(http: httpx.Client) -> list[tuple[str, int]]:
        return [(path, http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"}).status_code)
                for method, path, token, body in calls]

    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def probes():
        with httpx.Client(base_url=base, timeout=10) as http:  # 10 s: a hang guard, far below the pool's 30 s
            while not stop.is_set():
                try:
                    results.extend(probe_round(http))
                except httpx.HTTPError as exc:
                    results.append((type(exc).__name__, 0))
                time.sleep(0.1)

    async def hold(seconds: float, tokens: list[str]) -> list[int]:
        statuses: list[int] = []
        ended: list[str] = []
        limits = httpx.Limits(max_connections=STREAMS + 5, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None), limits=limits) as client:
            async def one(i: int):
                last = ""
                headers = {"Authorization": f"Bearer {tokens[i // 20]}"}
                async with client.stream("GET", "/api/projects/demo/workloads/parked/readiness-events", headers=headers) as r:
                    statuses.append(r.status_code)
                    async for line in r.aiter_lines():
                        last = line or last
                ended.append(last)  # the server closed it (not the cancel below)

            tasks = [asyncio.create_task(one(i)) for i in range(STREAMS)]
            await asyncio.sleep(seconds)
            for task in tasks:
                task.cancel()  # the clients walk away mid-stream
            await asyncio.gather(*tasks, return_exceptions=True)
        assert not ended, ended[:3]  # every stream stayed open while waiting
        return statuses

    # Warm up, then take the baseline. Database connections are counted apart: the PostgreSQL pool may
    # grow to its bound (DB_POOL_MAX) while 60 streams authorize at once and keeps them idle for reuse.
    with httpx.Client(base_url=base, timeout=10) as http:
        for _ in range(5):
            probe_round(http)
    asyncio.run(hold(1, minted["tokens"][3:]))  # other tokens: these slots are freed as the server notices
    time.sleep(1)
    baseline_db, baseline = _fds(web, stack.data_dir)

    thread = threading.Thread(target=probes)
    thread.start()
    try:
        statuses = asyncio.run(hold(HOLD_S, minted["tokens"][:3]))
    finally:
        stop.set()
        thread.join(30)
    assert statuses == [200] * STREAMS
    assert results and all(status == 200 for _, status in results), [r for r in results if r[1] != 200][:5]
    assert {path for path, _ in results} == {c[1] for c in calls}
    wait_for(lambda: _fds(web, stack.data_dir)[1] <= baseline, 20, interval=0.5,
             what=f"the web process's fds back to {baseline} (database connections aside)")
    pool_bound = int(os.environ.get("DB_POOL_MAX", "10")) if os.environ.get("DATABASE_URL", "").startswith("postgres") else 0
    assert _fds(web, stack.data_dir)[0] <= max(baseline_db, pool_bound)
    mgmt.delete("served")
    mgmt.delete("parked")
    wait_for(lambda: not stack.engines(), 30, what="no engine left")
