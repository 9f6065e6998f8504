"""The SkyPilot provider: the catalog → accelerator mapping, the task it launches, and its calls
against a mocked `sky` module (SkyPilot itself is an optional extra, not installed in tests)."""
from __future__ import annotations

import enum
import types
from decimal import Decimal

import pytest

from catalog.models import GpuType
from workers.providers.base import MANAGED, WORKLOAD_LABEL, CapacityError, LaunchSpec, Offer
from workers.providers.skypilot import SkyPilotProvider, task_config

SPEC = LaunchSpec("https://ik.example", {**MANAGED, WORKLOAD_LABEL: "wl_abc"})
OFFER = Offer("NVIDIA A100-SXM4-80GB", Decimal("1.1"), "skypilot", vram_gb=80, accelerator="A100-80GB")


class ClusterStatus(enum.Enum):
    INIT = "INIT"
    UP = "UP"
    STOPPED = "STOPPED"


class FakeSky:
    """The few SkyPilot SDK calls the provider makes; requests resolve at once."""

    class exceptions:  # noqa: N801 - mirrors sky.exceptions
        class ResourcesUnavailableError(Exception):
            pass

        class ClusterDoesNotExist(Exception):
            pass

    def __init__(self):
        self.clusters: dict[str, ClusterStatus] = {}
        self.launched: list[dict] = []
        self.sold_out = False
        self.Task = types.SimpleNamespace(from_yaml_config=lambda config: {"task": config})

    def launch(self, task, cluster_name, **kwargs):
        if self.sold_out:
            raise self.exceptions.ResourcesUnavailableError("no A100-80GB in any region")
        self.launched.append(task["task"])
        self.clusters[cluster_name] = ClusterStatus.INIT
        return f"req-{len(self.launched)}"

    def status(self, cluster_names=None):
        return [{"name": n, "status": s} for n, s in self.clusters.items() if cluster_names is None or n in cluster_names]

    def get(self, request):
        return request

    def api_status(self):
        return []

    def down(self, name):
        if name not in self.clusters:
            raise self.exceptions.ClusterDoesNotExist(name)
        del self.clusters[name]


@pytest.fixture
def sky():
    return FakeSky()


@pytest.mark.parametrize("display, accelerator", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100-SXM4-40GB", "A100"),
    ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"), ("Tesla T4", "T4"), ("NVIDIA RTX A6000", "RTXA6000"),
])
def test_catalog_maps_display_names_to_skypilot_accelerators(db, display, accelerator):
    assert GpuType.objects.get(display_name=display).skypilot_name == accelerator


def test_offers_carry_the_accelerator_and_skip_gpus_skypilot_cannot_name(db, sky):
    offers = SkyPilotProvider(sky).offers(["NVIDIA L4", "NVIDIA GeForce RTX 5090"], None)
    assert [(o.gpu, o.accelerator) for o in offers] == [("NVIDIA L4", "L4")]


def test_task_asks_for_the_accelerator_and_runs_the_agent():
    config = task_config("ik-chat-1", OFFER, "ik_join_secret", SPEC)
    assert config["resources"]["accelerators"] == "A100-80GB:1" and config["resources"]["labels"][WORKLOAD_LABEL] == "wl_abc"
    assert "/agent/inferencekey-agent.pyz" in config["run"] and "--stop-engines-on-exit" in config["run"]


def test_join_token_is_a_secret_not_in_the_run_command():
    config = task_config("ik-chat-1", OFFER, "ik_join_secret", SPEC)
    assert config["secrets"] == {"IK_JOIN_TOKEN": "ik_join_secret"} and "ik_join_secret" not in config["run"]


def test_launch_is_one_cluster_named_after_the_instance(sky):
    provider = SkyPilotProvider(sky)
    provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    assert list(sky.clusters) == ["ik-chat-1"] and len(sky.launched) == 1


def test_unavailable_resources_are_a_capacity_error(sky):
    sky.sold_out = True
    with pytest.raises(CapacityError):
        SkyPilotProvider(sky).launch("ik-chat-1", OFFER, "ik_join_x", SPEC)


@pytest.mark.parametrize("status, state", [(ClusterStatus.INIT, "pending"), (ClusterStatus.UP, "running"),
                                           (ClusterStatus.STOPPED, "failed")])
def test_get_maps_cluster_status(sky, status, state):
    sky.clusters["ik-chat-1"] = status
    assert SkyPilotProvider(sky).get("ik-chat-1").state == state


def test_list_finds_only_clusters_this_server_named(sky):
    sky.clusters.update({"ik-chat-1": ClusterStatus.UP, "someone-else": ClusterStatus.UP})
    assert [i.name for i in SkyPilotProvider(sky).list(MANAGED)] == ["ik-chat-1"]


def test_terminate_is_down_and_idempotent(sky):
    provider = SkyPilotProvider(sky)
    provider.launch("ik-chat-1", OFFER, "ik_join_x", SPEC)
    provider.terminate("ik-chat-1")
    provider.terminate("ik-chat-1")
    assert sky.clusters == {} and provider.get("ik-chat-1") is None
