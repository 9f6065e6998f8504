"""End to end on one machine: the SDK's canonical flow against the real stack and a real engine
process (the stand-in for the vLLM binary), plus the crash-and-recover drills."""
from __future__ import annotations

import os
import signal
import time

import pytest
from inferencekey import DataClient, ManagementClient, WorkloadSpec

from .conftest import wait_for

pytestmark = pytest.mark.e2e


def mgmt_for(stack) -> ManagementClient:
    return ManagementClient(base_url=stack.base_url, sdk_token=stack.creds["sdk_token"], project="demo")


def spec(slug: str, task_type: str = "text2text") -> WorkloadSpec:
    return WorkloadSpec(name=slug.title(), slug=slug, model="standin/tiny-chat", backend="vllm",
                        command="vllm serve standin/tiny-chat --max-model-len 512 --port 9999", task_type=task_type)


def ensure_ready(stack, slug: str, task_type: str = "text2text") -> list:
    mgmt = mgmt_for(stack)
    mgmt.ensure(spec(slug, task_type))
    events = []
    mgmt.wait_until_ready(slug, timeout=90, on_progress=events.append)
    return events


def test_canonical_sdk_flow(stack):
    events = ensure_ready(stack, "chat")
    phases = [e.phase for e in events]
    assert phases[-1] == "ready" and ("bootstrapping" in phases or "provisioning" in phases), phases
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("chat", api_key=stack.creds["api_key"])

    result = endpoint.generate_text(prompt="Hola")
    assert result.text == "echo: Hola" and result.model

    chunks = list(endpoint.generate_text_stream(messages=[{"role": "user", "content": "stream me please"}]))
    assert "".join(c.text for c in chunks) == "echo: stream me please"
    assert len([c for c in chunks if c.text]) >= 2 and chunks[-1].finish_reason == "stop"

    ensure_ready(stack, "emb", "embedding")
    emb = DataClient(base_url=stack.base_url, project="demo").endpoint("emb", api_key=stack.creds["api_key"])
    vectors = emb.embed(input=["a", "b", "a"]).embeddings
    assert len(vectors) == 3 and vectors[0] == vectors[2] and vectors[0] != vectors[1]

    ensure_ready(stack, "rr", "reranker")
    rr = DataClient(base_url=stack.base_url, project="demo").endpoint("rr", api_key=stack.creds["api_key"])
    ranked = rr.rerank(query="red apples", documents=["blue sky", "red apples and pears", "apples"], top_n=2)
    assert [i.index for i in ranked.results] == [1, 2]
    assert ranked.results[0].relevance_score >= ranked.results[1].relevance_score

    assert len(stack.engines()) == 3
    mgmt = mgmt_for(stack)
    for slug in ("chat", "emb", "rr"):
        assert mgmt.delete(slug) is True
    wait_for(lambda: not stack.engines(), 30, what="every engine to stop after delete")


def test_killed_engine_is_restarted(stack):
    ensure_ready(stack, "crashy")
    [pid] = wait_for(lambda: stack.engines() or None, 10, what="an engine")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: [p for p in stack.engines() if p != pid] or None, 60, what="the engine to be restarted")
    mgmt_for(stack).wait_until_ready("crashy", timeout=60, silent=True)
    endpoint = DataClient(base_url=stack.base_url, project="demo").endpoint("crashy", api_key=stack.creds["api_key"])
    wait_for(lambda: _answers(endpoint), 30, what="the restarted engine to answer")
    mgmt_for(stack).delete("crashy")
    wait_for(lambda: not stack.engines(), 30, what="no engine left")


def _answers(endpoint) -> bool:
    try:
        return endpoint.generate_text(prompt="ping").text == "echo: ping"
    except Exception:
        return False


def test_killed_agent_adopts_its_engine(stack):
    ensure_ready(stack, "adopt")
    [engine] = wait_for(lambda: stack.engines() or None, 10, what="an engine")
    [agent] = wait_for(lambda: stack.children("workers.agent") or None, 10, what="the agent")
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: [p for p in stack.children("workers.agent") if p != agent] or None, 60, what="the agent to restart")
    time.sleep(3)  # a few heartbeats of the new agent
    assert stack.engines() == [engine], "the restarted agent must adopt its engine, not start a second one"
    mgmt_for(stack).wait_until_ready("adopt", timeout=30, silent=True)
    mgmt_for(stack).delete("adopt")
    wait_for(lambda: not stack.engines(), 30, what="no engine left")


def test_killed_celery_worker_mid_reconcile_converges(stack):
    [celery] = wait_for(lambda: stack.children("celery -A inferencekey_web worker") or
                        stack.children("inferencekey_web worker") or None, 10, what="the celery worker")
    mgmt = mgmt_for(stack)
    os.kill(celery, signal.SIGKILL)  # the create's reconcile task is queued while no worker runs
    mgmt.ensure(spec("after-crash"))
    mgmt.wait_until_ready("after-crash", timeout=90, silent=True)
    mgmt.delete("after-crash")
    wait_for(lambda: not stack.engines(), 30, what="no engine left")


def test_bootstrap_prints_the_url_up_runs_on(stack):
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in stack.env.items() if k != "INFERENCEKEY_BASE_URL"}  # as in a fresh shell
    out = subprocess.run([sys.executable, "manage.py", "bootstrap", "--email", "url@example.com", "--team", "acme",
                          "--project", "demo", "--json"], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert json.loads(out)["base_url"] == stack.base_url  # a random port, not 127.0.0.1:8000
