"""Readiness streams under load: N concurrent `wait_until_ready` SSE streams held open while the
API, an agent heartbeat and the gateway are measured (issue 7's acceptance: 500 streams for 30 s
on PostgreSQL, p95 of each under 1 s, the web process's file descriptors back to baseline after).

Starts `manage.py up` (uvicorn, Celery, local agent with the stand-in engine as `vllm`) in a
throwaway data dir on the database of BENCH_DATABASE_URL (a fresh PostgreSQL database is created
and dropped; without it SQLite), makes one served workload (for the gateway) and one that never
settles (pinned to a probe worker that never runs it: `provisioning`, so its streams stay open), mints enough SDK tokens for the
per-token cap, registers a probe worker, then:

  1. warms up and records the web process's fd count (baseline);
  2. opens N streams (one asyncio loop), reads their frames, and meanwhile, from another thread,
     loops GET /api/workloads/{slug}, POST /api/agent/heartbeat and a gateway chat completion;
  3. closes the streams and records the fd count again.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/bench_sse.py [--streams 500] [--seconds 30]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
from _stack import ROOT, free_port, percentiles

STANDIN_BIN = ROOT / "tests" / "standin_engine" / "bin"
PER_TOKEN = 20  # READINESS_MAX_STREAMS_PER_TOKEN's default
SSE_PATH = "/api/projects/demo/workloads/parked/readiness-events"

MINT = """
import json
from accounts import services
from accounts.models import Project
from workers.services import join_token_create
project = Project.objects.get(team__slug="bench", slug="demo")
tokens = [services.sdk_token_create(project=project, name=f"sse-{{i}}").value for i in range({n})]
join = join_token_create(team=project.team, name="probe", accepts_cpu=True).value
print(json.dumps({{"tokens": tokens, "join": join}}))
"""


def fresh_database(url: str) -> tuple[str, callable]:
    if not url.startswith(("postgres://", "postgresql://")):
        return "", lambda: None
    import psycopg

    name = f"ik_bench_sse_{uuid.uuid4().hex[:8]}"
    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunparse(urlparse(url)._replace(path=f"/{name}")), drop


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def db_handles(pid: int, database_url: str, data_dir: str) -> int:
    """Connections to PostgreSQL's port, or open SQLite files, among the process's fds."""
    url = urlparse(database_url)
    port = (url.port or 5432) if database_url else None
    remote = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            remote[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            count += port is not None and remote.get(target[8:-1]) == port
        else:
            count += target.startswith(os.path.join(data_dir, "db.sqlite3"))
    return count


def web_pid(up_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == up_pid and "uvicorn" in cmd:
                return int(entry.name)
    raise RuntimeError("no uvicorn child")


class Probes(threading.Thread):
    """API, heartbeat and gateway calls in a loop until stopped: latencies and non-200s."""

    def __init__(self, base: str, sdk_token: str, worker_token: str, api_key: str):
        super().__init__(daemon=True)
        self.base, self.sdk, self.worker, self.key = base, sdk_token, worker_token, api_key
        self.samples: dict[str, list[float]] = {"api": [], "heartbeat": [], "gateway": []}
        self.errors: dict[str, list[str]] = {"api": [], "heartbeat": [], "gateway": []}
        self.stop = threading.Event()

    def _one(self, http: httpx.Client, name: str, method: str, path: str, token: str, body=None) -> None:
        t0 = time.perf_counter()
        try:
            r = http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
            ok = r.status_code == 200
            detail = f"{r.status_code} {r.text[:120]}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.samples[name].append(time.perf_counter() - t0)
        if not ok:
            self.errors[name].append(detail)

    def run(self) -> None:
        chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        with httpx.Client(base_url=self.base, timeout=60) as http:
            i = 0
            while not self.stop.is_set():
                self._one(http, "api", "GET", "/api/workloads/served", self.sdk)
                self._one(http, "gateway", "POST", "/endpoint/demo/served/v1/chat/completions", self.key, chat)
                if i % 5 == 0:
                    self._one(http, "heartbeat", "POST", "/api/agent/heartbeat", self.worker, {"gpus": [], "replicas": []})
                i += 1
                time.sleep(0.05)


async def hold_streams(base: str, tokens: list[str], n: int, seconds: float) -> dict:
    opened, frames, ended, failures = 0, 0, 0, []
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60, read=None), limits=limits) as client:
        async def one(i: int):
            nonlocal opened, frames, ended
            token = tokens[i // PER_TOKEN]
            try:
                async with client.stream("GET", SSE_PATH, headers={"Authorization": f"Bearer {token}"}) as r:
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {(await r.aread())[:120]!r}")
                        return
                    opened += 1
                    async for line in r.aiter_lines():
                        frames += line.startswith("data: ")
                    ended += 1  # closed by the server before the end of the run
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(seconds)
        peak_open = opened
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"opened": peak_open, "frames": frames, "ended": ended, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    from inferencekey import ManagementClient, WorkloadSpec

    data_dir = tempfile.mkdtemp(prefix="ik-bench-sse-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database_url, drop = fresh_database(os.environ.get("BENCH_DATABASE_URL", ""))
    env = {**os.environ, "INFERENCEKEY_DATA_DIR": data_dir, "INFERENCEKEY_BASE_URL": base,
           "DJANGO_SETTINGS_MODULE": "inferencekey_web.settings"}
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    log = open(Path(data_dir) / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port), "--agent-path", str(STANDIN_BIN)],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def manage(*argv: str) -> str:
        return subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True, timeout=120).stdout

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the stack did not start")
            time.sleep(0.3)
        creds = json.loads(manage("bootstrap", "--email", "sse@example.com", "--team", "bench", "--project", "demo",
                                  "--json").splitlines()[-1])
        minted = json.loads(manage("shell", "-c", MINT.format(n=(args.streams + PER_TOKEN - 1) // PER_TOKEN)).splitlines()[-1])
        probe = httpx.post(f"{base}/api/agent/register", json={"join_token": minted["join"], "hostname": "probe",
                                                                "cpu_only": True}, timeout=30).json()
        worker_token = probe["worker_token"]
        mgmt = ManagementClient(base_url=base, sdk_token=creds["sdk_token"], project="demo")
        mgmt.ensure(WorkloadSpec(name="served", slug="served", model="standin/tiny-chat", backend="vllm",
                                 command="vllm serve standin/tiny-chat"))
        mgmt.wait_until_ready("served", timeout=120, silent=True)
        parked = httpx.post(f"{base}/api/projects/demo/workloads", headers={"Authorization": f"Bearer {creds['sdk_token']}"},
                            json={"name": "parked", "slug": "parked", "model_name": "standin/tiny-chat", "backend": "vllm",
                                  "config": {"command": "vllm serve standin/tiny-chat"},
                                  "worker_id": probe["worker_id"]},  # never run by the probe: stays `provisioning`
                            timeout=30)
        assert parked.status_code == 201, parked.text
        pid = web_pid(up.pid)

        warm = Probes(base, creds["sdk_token"], worker_token, creds["api_key"])
        warm.start()
        time.sleep(3)
        warm.stop.set()
        warm.join()
        time.sleep(2)
        fds_before, db_before = fd_count(pid), db_handles(pid, database_url, data_dir)

        probes = Probes(base, creds["sdk_token"], worker_token, creds["api_key"])
        peak = [fds_before]

        def sample_fds():
            while not probes.stop.is_set():
                peak.append(fd_count(pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample_fds, daemon=True)
        probes.start()
        sampler.start()
        streams = asyncio.run(hold_streams(base, minted["tokens"], args.streams, args.seconds))
        probes.stop.set()
        probes.join()
        sampler.join()
        settle = time.monotonic() + 20
        fds_after = fd_count(pid)
        while fds_after > fds_before and time.monotonic() < settle:
            time.sleep(0.5)
            fds_after = fd_count(pid)
        db_after = db_handles(pid, database_url, data_dir)

        db = "PostgreSQL" if database_url else "SQLite"
        print(f"{args.streams} readiness streams for {args.seconds:.0f} s on {db}; 1 uvicorn process; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"streams opened: {streams['opened']}, closed by the server before the end: {streams['ended']}, "
              f"failures: {len(streams['failures'])}; frames read: {streams['frames']}")
        print(f"{'':<12}{'calls':>7}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
        for name in ("api", "heartbeat", "gateway"):
            samples = probes.samples[name]
            p50, p95 = percentiles(samples)
            print(f"{name:<12}{len(samples):>7}{len(probes.errors[name]):>8}{p50:>9.1f}{p95:>9.1f}{max(samples) * 1000:>9.1f}")
        print(f"web process fds: before {fds_before}, peak {max(peak)}, after {fds_after} "
              f"(of which database connections: before {db_before}, after {db_after}; the pool's bound is "
              f"DB_POOL_MAX={os.environ.get('DB_POOL_MAX', '10')})")
        for name, errors in probes.errors.items():
            for e in errors[:3]:
                print(f"  {name} error: {e}")
        for f in streams["failures"][:3]:
            print(f"  stream failure: {f}")
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
        drop()


if __name__ == "__main__":
    main()
