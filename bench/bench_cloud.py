"""Cloud autoscaling on the `local` capacity provider through the real one-machine stack (stand-in
engine as `vllm`, SDK for every workload operation), beside its baseline in the same run:

   A request sent to a workload at zero (held by the gateway, which wakes it) — on cloud capacity an
   instance is launched first (an agent process registers with a one-time join token, then starts
   the engine). Baseline: the same request to a private autoscaling workload at zero on the shared
   local worker (no instance to launch). The difference is what an instance costs before its engine
   boots on the local provider.

    .venv/bin/python bench/bench_cloud.py [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _stack import ROOT, percentiles, start_up_stack
from bench_autoscale import _is_engine, _ready, wait


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from inferencekey import DataClient, ManagementClient, WorkloadSpec

    up, data_dir, port, env = start_up_stack("ik-bench-cloud-", {"INFERENCEKEY_CLOUD_PROVIDER": "local", "INFERENCEKEY_AUTOSCALE_INTERVAL_S": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        wait(lambda: _ready(base), 60, 0.2)
        creds = json.loads(subprocess.run([sys.executable, "manage.py", "bootstrap", "--email", "b@example.com", "--team", "bench",
                                           "--project", "demo", "--json"], cwd=ROOT, env=env, check=True,
                                          capture_output=True, text=True).stdout)
        mgmt = ManagementClient(base_url=base, sdk_token=creds["sdk_token"], project="demo")
        data = DataClient(base_url=base, project="demo")
        agent_creds = Path(data_dir) / "agent" / "credentials.json"
        local = wait(lambda: agent_creds.exists() and json.loads(agent_creds.read_text())["worker_id"], 30, 0.2)
        cloud_root = Path(data_dir) / "cloud-local"

        def private_engines() -> int:
            return sum(1 for pid in os.listdir("/proc") if pid.isdigit() and _is_engine(pid, data_dir))

        def instances() -> int:
            return sum(1 for p in cloud_root.iterdir()) if cloud_root.exists() else 0

        workers = {
            "private": ({"source": "private", "private_worker_ids": [local]}, private_engines),
            "cloud": ({"source": "cloud", "cloud_pool": {"gpu_pool": ["NVIDIA L4"]}}, instances),
        }
        results: dict[str, list[float]] = {}
        for kind, (pool, running) in workers.items():
            mgmt.ensure(WorkloadSpec(name=kind, slug=kind, model="standin/tiny", backend="vllm", command="vllm serve standin/tiny",
                                     execution_policy="autoscaling",
                                     execution_policy_config={"min_workers": 0, "max_workers": 1, "scale_down_delay_s": 2,
                                                              "max_hourly_cost_usd": 1.0, "workers": pool}))
            mgmt.wait_until_ready(kind, timeout=120, silent=True)
            endpoint = data.endpoint(kind, api_key=creds["api_key"])
            endpoint.generate_text(prompt="warm")
            for i in range(args.runs):
                wait(lambda running=running: running() == 0, 120, 0.1)  # at zero: engine (and instance) gone
                time.sleep(0.5)
                t0 = time.perf_counter()
                assert endpoint.generate_text(prompt=f"cold {i}").text == f"echo: cold {i}"
                results.setdefault(kind, []).append(time.perf_counter() - t0)
            for _attempt in range(3):  # a pooled connection the server closed meanwhile: try again
                try:
                    mgmt.delete(kind)
                    break
                except Exception:  # noqa: BLE001
                    time.sleep(1)

        print(f"{args.runs} runs; database {'PostgreSQL' if env.get('DATABASE_URL') else 'SQLite'}")
        print(f"{'':<60}{'p50 ms':>10}{'p95 ms':>10}")
        rows = (
            ("request at zero, private worker (baseline)", results["private"]),
            ("request at zero, cloud (local provider: launch an instance)", results["cloud"]),
            ("instance overhead (cloud minus private)",
             [c - p for c, p in zip(results["cloud"], results["private"], strict=True)]),
        )
        for name, values in rows:
            p50, p95 = percentiles(values)
            print(f"{name:<60}{p50:>10.0f}{p95:>10.0f}")
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)


if __name__ == "__main__":
    main()
