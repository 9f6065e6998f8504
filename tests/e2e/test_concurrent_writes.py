"""The stack under a burst of concurrent writes (SQLite by default, PostgreSQL in CI): API creates,
`manage.py bootstrap --password` runs, reconcile tasks and agent heartbeats all write at once, and
none of them fails or meets "database is locked"."""
from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import ROOT, wait_for

pytestmark = pytest.mark.e2e

CREATES = 24
BOOTSTRAPS = 3


def _workload(i: int) -> dict:
    # A few real replicas (the stand-in engine) so heartbeats report state changes; the rest ask for 0
    # replicas, which still makes the reconciler write phase, message and events.
    return {"name": f"Burst {i}", "slug": f"burst-{i}", "model_name": "standin/tiny-chat", "backend": "vllm",
            "config": {"command": "vllm serve standin/tiny-chat --max-model-len 512"},
            "execution_policy": "fixed", "execution_policy_config": {"replicas": 1 if i < 3 else 0}}


def test_burst_of_creates_and_bootstraps_meets_no_lock(stack):
    log_path = stack.data_dir / "up.log"
    log_start = log_path.stat().st_size
    headers = {"Authorization": f"Bearer {stack.creds['sdk_token']}"}
    barrier = threading.Barrier(CREATES + BOOTSTRAPS)

    def create(i: int) -> int:
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as http:
            barrier.wait()
            return http.post("/api/projects/demo/workloads", json=_workload(i)).status_code

    def bootstrap(i: int) -> tuple[int, str]:
        barrier.wait()
        done = subprocess.run([sys.executable, "manage.py", "bootstrap", "--email", f"burst{i}@example.com",
                               "--team", "acme", "--project", "demo", "--password", "a-long-password-123", "--json"],
                              cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stderr[-2000:]

    with ThreadPoolExecutor(CREATES + BOOTSTRAPS) as pool:
        creates = [pool.submit(create, i) for i in range(CREATES)]
        bootstraps = [pool.submit(bootstrap, i) for i in range(BOOTSTRAPS)]
        statuses = [f.result() for f in creates]
        runs = [f.result() for f in bootstraps]
    assert statuses == [201] * CREATES
    assert [code for code, _ in runs] == [0] * BOOTSTRAPS, runs

    def all_reconciled() -> bool:
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
            items = [http.get(f"/api/workloads/burst-{i}").json() for i in range(CREATES)]
        return all(w["observed_generation"] == w["generation"] and w["phase"] in ("ready", "stopped") for w in items)

    wait_for(all_reconciled, 120, interval=1, what="every burst workload to be reconciled")

    def delete(i: int) -> int:
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as http:
            return http.delete(f"/api/workloads/burst-{i}").status_code

    with ThreadPoolExecutor(CREATES) as pool:
        assert list(pool.map(delete, range(CREATES))) == [204] * CREATES
    wait_for(lambda: not stack.engines(), 60, what="every engine to stop after delete")

    with open(log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode(errors="replace")
    assert "database is locked" not in log, log[-4000:]
    assert " 500 " not in log and "Traceback" not in log, log[-4000:]
