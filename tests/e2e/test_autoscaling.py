"""End to end, SDK only: a private autoscaling workload with min_workers 0 on the shared local worker
becomes ready, serves, scales to zero after its delay (replica stopped, engine process gone), and a
request sent at zero is held by the gateway and answered once the engine is back."""
from __future__ import annotations

import json

import pytest
from inferencekey import DataClient, ManagementClient, WorkloadSpec

from .conftest import wait_for

pytestmark = pytest.mark.e2e

UP_EXTRA_ENV = {"INFERENCEKEY_AUTOSCALE_INTERVAL_S": "1"}


def local_worker_id(stack) -> str:
    creds = stack.data_dir / "agent" / "credentials.json"
    return wait_for(lambda: creds.exists() and json.loads(creds.read_text())["worker_id"], 30, what="the local agent")


def last_event(mgmt: ManagementClient, slug: str):
    events = []
    mgmt.wait_until_ready(slug, timeout=10, on_progress=events.append)
    return events[-1]


def test_private_autoscaling_scales_to_zero_and_wakes_on_a_request(stack):
    mgmt = ManagementClient(base_url=stack.base_url, sdk_token=stack.creds["sdk_token"], project="demo")
    mgmt.ensure(WorkloadSpec(
        name="Elastic", slug="elastic", model="standin/tiny-chat", backend="vllm",
        command="vllm serve standin/tiny-chat --max-model-len 512", execution_policy="autoscaling",
        execution_policy_config={"min_workers": 0, "max_workers": 1, "scale_down_delay_s": 3,
                                 "workers": {"source": "private", "private_worker_ids": [local_worker_id(stack)]}},
    ))
    mgmt.wait_until_ready("elastic", timeout=90)
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("elastic", api_key=stack.creds["api_key"])
    assert endpoint.generate_text(prompt="first").text == "echo: first"

    wait_for(lambda: not stack.engines(), 60, what="scale to zero (engine process gone)")
    event = last_event(mgmt, "elastic")  # returns at once: a workload at zero is ready
    assert (event.phase, event.message) == ("ready", "scaled to zero; wakes on the next request")

    assert endpoint.generate_text(prompt="at zero").text == "echo: at zero"  # held, then answered
    assert len(stack.engines()) == 1
    mgmt.delete("elastic")
