"""The Kubernetes provider against a fake API server on loopback (the official client, real HTTP),
and its Pod manifest against the Kubernetes schema (kubernetes-validate, offline)."""
from __future__ import annotations

import copy
from decimal import Decimal

import kubernetes_validate
import pytest
from kubernetes import client

from workers.providers.base import MANAGED, WORKLOAD_LABEL, CapacityError, LaunchSpec, Offer
from workers.providers.kubernetes import KubernetesProvider, pod_manifest, product_label

from .fake_kube import SCHEMA_VERSION, FakeKube

OFFER = Offer("NVIDIA A100-SXM4-80GB", Decimal("1.1"), "kubernetes", vram_gb=80)
SPEC = LaunchSpec("http://ik.example:8000", {**MANAGED, WORKLOAD_LABEL: "wl_abc"})


@pytest.fixture
def kube():
    with FakeKube() as fake:
        configuration = client.Configuration()
        configuration.host = fake.url
        fake.provider = KubernetesProvider(client.CoreV1Api(client.ApiClient(configuration)), namespace="gpu")
        yield fake


def manifest(**kw):
    return pod_manifest("ik-chat-1a2b3c", OFFER, "ik_join_secret", SPEC, namespace="gpu", image="vllm/vllm-openai:v0.11", **kw)


def test_pod_manifest_is_a_valid_pod():
    kubernetes_validate.validate(manifest(), SCHEMA_VERSION, strict=True)


def test_schema_validation_rejects_a_malformed_pod():
    bad = copy.deepcopy(manifest())
    bad["spec"]["containers"][0]["resources"]["limits"] = ["nvidia.com/gpu"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, SCHEMA_VERSION, strict=True)


def test_pod_requests_one_gpu_on_nodes_of_the_offered_product():
    spec = manifest()["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_pod_runs_the_downloaded_agent_with_the_token_in_its_environment():
    container = manifest()["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["IK_JOIN_TOKEN"] == "ik_join_secret" and env["IK_SERVER"] == "http://ik.example:8000"
    assert "/agent/inferencekey-agent.pyz" in container["command"][-1] and "ik_join_secret" not in container["command"][-1]


@pytest.mark.parametrize("name, label", [("NVIDIA L4", "NVIDIA-L4"), ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
                                         ("Tesla T4", "Tesla-T4")])
def test_product_label_follows_gpu_feature_discovery(name, label):
    assert product_label(name) == label


def test_launch_creates_a_labelled_pod(kube):
    info = kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    pod = kube.pods[("gpu", "ik-chat-1")]
    assert (info.state, pod["metadata"]["labels"][WORKLOAD_LABEL], kube.rejected) == ("pending", "wl_abc", [])


def test_launch_is_idempotent_by_name(kube):
    first = kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    again = kube.provider.launch("ik-chat-1", OFFER, "ik_join_y", SPEC)
    assert again.provider_id == first.provider_id and len(kube.pods) == 1


@pytest.mark.parametrize("fields, state", [
    ({"phase": "Running"}, "running"), ({"phase": "Failed"}, "failed"),
    ({"phase": "Failed", "reason": "Evicted"}, "preempted"), ({"phase": "Pending"}, "pending"),
])
def test_get_reads_the_pod_phase(kube, fields, state):
    kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    kube.set_status("ik-chat-1", "gpu", **fields)
    assert kube.provider.get("ik-chat-1").state == state


def test_get_of_an_unknown_pod_is_none(kube):
    assert kube.provider.get("ik-nope") is None


def test_list_selects_by_labels(kube):
    kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    kube.provider.launch("ik-chat-2", OFFER, "ik_join_y", LaunchSpec(SPEC.server_url, {**MANAGED, WORKLOAD_LABEL: "wl_other"}))
    assert [i.name for i in kube.provider.list({WORKLOAD_LABEL: "wl_abc"})] == ["ik-chat-1"]
    assert len(kube.provider.list(MANAGED)) == 2


def test_terminate_deletes_and_is_idempotent(kube):
    kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    kube.provider.terminate("ik-chat-1")
    kube.provider.terminate("ik-chat-1")
    assert kube.pods == {}


def test_exceeded_quota_is_a_capacity_error(kube):
    kube.quota_exceeded = True
    with pytest.raises(CapacityError):
        kube.provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
