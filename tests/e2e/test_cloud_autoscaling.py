"""End to end, SDK only, on the `local` capacity provider (each instance an agent process with one
simulated NVIDIA L4 at $0.43/h): a cloud autoscaling workload with a $1/h ceiling boots an instance,
becomes ready and serves; under load it scales up to the 2 instances the ceiling allows and never
past them, saying so; idle, it falls back to min_workers; delete() leaves no instance, agent or engine.
With min_workers 0 it goes to zero instances, and a request sent then is held while one boots."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from inferencekey import DataClient, ManagementClient, WorkloadSpec

from .conftest import processes_matching, wait_for

pytestmark = pytest.mark.e2e

UP_EXTRA_ENV = {"INFERENCEKEY_AUTOSCALE_INTERVAL_S": "1", "INFERENCEKEY_CLOUD_PROVIDER": "local",
                "INFERENCEKEY_CLOUD_SCALE_UP_DELAY_S": "2"}


def cloud_agents(stack) -> list[int]:
    root = str(stack.data_dir / "cloud-local")
    return [p for p in processes_matching("workers.agent") if root in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def cloud_engines(stack) -> list[int]:
    marker = f"HOME={stack.data_dir / 'cloud-local'}".encode()
    out = []
    for pid in processes_matching("standin_engine/server.py"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(marker) for e in environ):
            out.append(pid)
    return out


def workload_message(stack, slug: str) -> str:
    """The status message (GET /api/workloads/{id}; the list carries the spec only)."""
    auth = {"Authorization": f"Bearer {stack.creds['sdk_token']}"}
    rows = httpx.get(f"{stack.base_url}/api/projects/demo/workloads", headers=auth, timeout=10).json()
    rows = rows.get("workloads", rows) if isinstance(rows, dict) else rows
    wid = next(r for r in rows if r["slug"] == slug)["id"]
    return httpx.get(f"{stack.base_url}/api/workloads/{wid}", headers=auth, timeout=10).json().get("message") or ""


def test_cloud_autoscaling_scales_to_the_cost_cap_and_delete_leaves_nothing(stack):
    mgmt = ManagementClient(base_url=stack.base_url, sdk_token=stack.creds["sdk_token"], project="demo")
    mgmt.ensure(WorkloadSpec(
        name="Cloudy", slug="cloudy", model="standin/tiny-chat", backend="vllm",
        command="vllm serve standin/tiny-chat --max-model-len 512 --delay-ms 1000", execution_policy="autoscaling",
        execution_policy_config={
            "min_workers": 1, "max_workers": 5, "max_hourly_cost_usd": 1.0, "target_inflight_per_replica": 1,
            "scale_down_delay_s": 5,
            "workers": {"source": "cloud", "cloud_pool": {"gpu_pool": ["NVIDIA L4"], "max_instances": 4}},
        },
    ))
    mgmt.wait_until_ready("cloudy", timeout=120)
    assert len(cloud_agents(stack)) == 1
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("cloudy", api_key=stack.creds["api_key"])
    assert endpoint.generate_text(prompt="hello").text == "echo: hello"

    # Load: 6 requests in flight for a target of 1 per replica wants 6 workers; $1/h buys 2 L4s.
    stop, most = threading.Event(), [0]

    def caller():
        while not stop.is_set():
            try:
                endpoint.generate_text(prompt="load")
            except Exception:  # noqa: BLE001 - a held request may time out while an instance boots
                time.sleep(0.2)

    def watch():
        while not stop.is_set():
            most[0] = max(most[0], len(cloud_agents(stack)))
            time.sleep(0.2)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(6)] + [threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(cloud_engines(stack)) == 2, 120, what="2 engines on 2 instances")
        seen = [""]

        def capped() -> bool:
            seen[0] = workload_message(stack, "cloudy")
            return "capped at 2 worker(s) by max_hourly_cost_usd" in seen[0]

        try:
            wait_for(capped, 30, what="the capped message")
        except AssertionError:
            raise AssertionError(f"no capped message; last: {seen[0]!r}") from None
        time.sleep(5)  # still under load: no third instance
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert most[0] == 2

    wait_for(lambda: len(cloud_agents(stack)) == 1 and len(cloud_engines(stack)) == 1, 180,
             what="idle: back to min_workers (1 instance)")

    mgmt.delete("cloudy")
    root = stack.data_dir / "cloud-local"
    wait_for(lambda: not cloud_agents(stack) and not cloud_engines(stack) and not any(root.iterdir()), 60,
             what="no instance, agent or engine left")


def test_cloud_workload_at_zero_has_no_instance_and_a_request_wakes_one(stack):
    mgmt = ManagementClient(base_url=stack.base_url, sdk_token=stack.creds["sdk_token"], project="demo")
    mgmt.ensure(WorkloadSpec(
        name="Sleepy", slug="sleepy", model="standin/tiny-chat", backend="vllm",
        command="vllm serve standin/tiny-chat --max-model-len 512", execution_policy="autoscaling",
        execution_policy_config={
            "min_workers": 0, "max_workers": 2, "max_hourly_cost_usd": 1.0, "scale_down_delay_s": 3,
            "workers": {"source": "cloud", "cloud_pool": {"gpu_pool": ["NVIDIA L4"]}},
        },
    ))
    mgmt.wait_until_ready("sleepy", timeout=120)
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("sleepy", api_key=stack.creds["api_key"])
    assert endpoint.generate_text(prompt="first").text == "echo: first"

    wait_for(lambda: not cloud_agents(stack) and not cloud_engines(stack), 120, what="scaled to zero: no instance")
    assert "scaled to zero" in workload_message(stack, "sleepy")

    assert endpoint.generate_text(prompt="at zero").text == "echo: at zero"  # held while an instance boots
    assert len(cloud_agents(stack)) == 1
    mgmt.delete("sleepy")
    wait_for(lambda: not cloud_agents(stack) and not cloud_engines(stack), 60, what="no agent and no engine left")
