"""`ensure()` → ready through the real one-machine stack, minus the engine's own boot time.

Starts `manage.py up` (uvicorn, Celery worker and beat, local agent) in a throwaway data dir with
the stand-in engine as `vllm`, then, interleaved N times: (a) boot the stand-in directly and time
until its /health answers (the engine's own boot: the baseline), (b) SDK ensure() of a new workload
and wait_until_ready(). Prints p50/p95 of both and of the difference (goal ≤ 1 s).

    .venv/bin/python bench/bench_ready.py [--runs 10]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import httpx
from _stack import ROOT, free_port, percentiles, start_up_stack

STANDIN = ROOT / "tests" / "standin_engine"


def engine_boot_s() -> float:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(STANDIN / "server.py"), "serve", "m", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    from inferencekey import ManagementClient, WorkloadSpec

    up, data_dir, port, env = start_up_stack("ik-bench-ready-")
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        creds = json.loads(subprocess.run([sys.executable, "manage.py", "bootstrap", "--email", "b@example.com", "--team", "bench",
                                           "--project", "demo", "--json"], cwd=ROOT, env=env, check=True,
                                          capture_output=True, text=True).stdout)
        mgmt = ManagementClient(base_url=base, sdk_token=creds["sdk_token"], project="demo")
        time.sleep(2)  # let the local agent register
        boots, readies = [], []
        for i in range(args.runs):
            boots.append(engine_boot_s())
            spec = WorkloadSpec(name=f"r{i}", slug=f"r{i}", model="standin/tiny", backend="vllm", command="vllm serve standin/tiny")
            t0 = time.perf_counter()
            mgmt.ensure(spec)
            mgmt.wait_until_ready(f"r{i}", timeout=120, silent=True)
            readies.append(time.perf_counter() - t0)
            mgmt.delete(f"r{i}")
            time.sleep(1.0)  # let the agent stop the engine before the next run
        diffs = [r - b for r, b in zip(readies, boots, strict=True)]
        print(f"{args.runs} runs, heartbeat interval {env.get('INFERENCEKEY_HEARTBEAT_INTERVAL_S', '0.5 (up default)')} s")
        print(f"{'':<34}{'p50 ms':>10}{'p95 ms':>10}")
        for name, values in (("engine boot alone (baseline)", boots), ("ensure() -> ready (SDK)", readies),
                             ("ensure() -> ready minus boot", diffs)):
            p50, p95 = percentiles(values)
            print(f"{name:<34}{p50:>10.0f}{p95:>10.0f}")
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(60)


if __name__ == "__main__":
    main()
