"""Private autoscaling through the real one-machine stack (stand-in engine as `vllm`, SDK for every
workload operation), each figure next to its baseline measured in the same run:

1. From zero: a request sent to a workload scaled to zero (held by the gateway, which wakes it) —
   its latency minus the engine's own boot time (the stand-in started directly until /health
   answers). Baseline: the same request to the warm workload. Goal: ≤ 1 s over the boot.
2. Load step → scale-up decision on private workers: a workload with one ready replica sized for 1
   request (`target_inflight_per_replica: 1`, max 2) gets 3 concurrent slow requests; time until the
   autoscaler's persisted target is 2. Baseline: time until the gateway's demand is visible in the
   shared store (the part no autoscaler can beat). Goal: ≤ 2 s.

    .venv/bin/python bench/bench_autoscale.py [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from _stack import ROOT, percentiles, start_up_stack
from bench_ready import engine_boot_s


def wait(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError("timed out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from inferencekey import DataClient, ManagementClient, WorkloadSpec

    up, data_dir, port, env = start_up_stack("ik-bench-autoscale-")
    # Read the autoscaler's state and the demand rows straight from the stack's database.
    os.environ.update(INFERENCEKEY_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="inferencekey_web.settings")
    if env.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = env["DATABASE_URL"]
    sys.path.insert(0, str(ROOT))
    try:
        base = f"http://127.0.0.1:{port}"
        wait(lambda: _ready(base), 60, 0.2)
        import django

        django.setup()
        from django.db import close_old_connections

        from workloads import demand
        from workloads.models import Workload

        creds = json.loads(subprocess.run([sys.executable, "manage.py", "bootstrap", "--email", "b@example.com", "--team", "bench",
                                           "--project", "demo", "--json"], cwd=ROOT, env=env, check=True,
                                          capture_output=True, text=True).stdout)
        mgmt = ManagementClient(base_url=base, sdk_token=creds["sdk_token"], project="demo")
        data = DataClient(base_url=base, project="demo")
        agent_creds = Path(data_dir) / "agent" / "credentials.json"
        local = wait(lambda: agent_creds.exists() and json.loads(agent_creds.read_text())["worker_id"], 30, 0.2)

        def engines() -> int:
            return sum(1 for pid in os.listdir("/proc") if pid.isdigit() and _is_engine(pid, data_dir))

        def spec(slug: str, extra: dict, command: str = "vllm serve standin/tiny") -> WorkloadSpec:
            config = {"min_workers": 0, "max_workers": 1, "scale_down_delay_s": 2,
                      "workers": {"source": "private", "private_worker_ids": [local]}, **extra}
            return WorkloadSpec(name=slug, slug=slug, model="standin/tiny", backend="vllm", command=command,
                                execution_policy="autoscaling", execution_policy_config=config)

        # --- 1. from zero ------------------------------------------------------------------
        boots, warm, cold = [], [], []
        mgmt.ensure(spec("cold", {}))
        mgmt.wait_until_ready("cold", timeout=120, silent=True)
        endpoint = data.endpoint("cold", api_key=creds["api_key"])
        for i in range(args.runs):
            t0 = time.perf_counter()
            endpoint.generate_text(prompt=f"warm {i}")
            warm.append(time.perf_counter() - t0)
            wait(lambda: engines() == 0, 120, 0.1)  # scaled to zero: the engine is gone
            time.sleep(0.5)
            boots.append(engine_boot_s())
            t0 = time.perf_counter()
            assert endpoint.generate_text(prompt=f"cold {i}").text == f"echo: cold {i}"
            cold.append(time.perf_counter() - t0)
        mgmt.delete("cold")

        # --- 2. load step → decision -------------------------------------------------------
        visible, decided = [], []
        for i in range(args.runs):
            slug = f"step{i}"
            mgmt.ensure(spec(slug, {"max_workers": 2, "target_inflight_per_replica": 1, "scale_down_delay_s": 60},
                             command="vllm serve standin/tiny --delay-ms 4000"))
            mgmt.wait_until_ready(slug, timeout=120, silent=True)
            wid = Workload.objects.get(slug=slug).id
            ep = data.endpoint(slug, api_key=creds["api_key"])
            time.sleep(1.0)
            t0 = time.perf_counter()
            threads = [threading.Thread(target=ep.generate_text, kwargs={"prompt": "x"}) for _ in range(3)]
            for t in threads:
                t.start()

            marks = _time_step(wid, t0, demand, Workload, close_old_connections)
            visible.append(marks["seen"])
            decided.append(marks["decided"])
            for t in threads:
                t.join()
            mgmt.delete(slug)
            time.sleep(1.0)

        print(f"{args.runs} runs; beat autoscale interval {env.get('INFERENCEKEY_AUTOSCALE_INTERVAL_S', '5 (default)')} s, "
              f"heartbeat {env.get('INFERENCEKEY_HEARTBEAT_INTERVAL_S', '0.5 (up default)')} s, database "
              f"{'PostgreSQL' if env.get('DATABASE_URL') else 'SQLite'}, demand store {demand.store()}")
        print(f"{'':<52}{'p50 ms':>10}{'p95 ms':>10}")
        rows = (
            ("warm request (baseline)", warm),
            ("engine boot alone (baseline)", boots),
            ("request sent at zero (held, woken, answered)", cold),
            ("request at zero minus engine boot", [c - b for c, b in zip(cold, boots, strict=True)]),
            ("load step -> demand visible (baseline)", visible),
            ("load step -> scale-up decision", decided),
        )
        for name, values in rows:
            p50, p95 = percentiles(values)
            print(f"{name:<52}{p50:>10.0f}{p95:>10.0f}")
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)


def _time_step(wid: str, t0: float, demand, Workload, close_old_connections) -> dict[str, float]:
    """Seconds from t0 until the demand is visible in the shared store, and until the target is 2."""
    marks: dict[str, float] = {}

    def both() -> bool:
        close_old_connections()
        now = time.perf_counter() - t0
        c = demand.read([wid]).get(wid)
        if "seen" not in marks and c is not None and c.inflight + c.held >= 2:
            marks["seen"] = now
        state = Workload.objects.filter(pk=wid).values_list("autoscaler", flat=True).first() or {}
        if "decided" not in marks and (state.get("target") or 0) >= 2:
            marks["decided"] = now
        return len(marks) == 2

    wait(both, 30)
    return marks


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _is_engine(pid: str, data_dir: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"standin_engine/server.py" not in cmd:
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return f"HOME={data_dir}/agent/engine-home".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


if __name__ == "__main__":
    main()
