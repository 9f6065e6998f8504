"""A capacity provider double with scripted capacity errors, failures and preemptions.

Instances are dicts in memory; `register(name)` plays the instance's agent registering with the
join token it was launched with (as the real agent does on boot)."""
from __future__ import annotations

from decimal import Decimal

from workers.providers.base import (
    PREEMPTED,
    RUNNING,
    CapacityError,
    InstanceInfo,
    LaunchSpec,
    Offer,
    ProviderError,
    matches,
)

PRICES = {"NVIDIA L4": "0.43", "NVIDIA A10G": "1.006", "NVIDIA L40S": "0.79", "NVIDIA H100 80GB HBM3": "2.69"}
VRAM = {"NVIDIA L4": 24, "NVIDIA A10G": 24, "NVIDIA L40S": 48, "NVIDIA H100 80GB HBM3": 80}


class FakeProvider:
    name = "fake"

    def __init__(self, prices: dict | None = None):
        self.prices = {k: Decimal(v) for k, v in (prices or PRICES).items()}
        self.instances: dict[str, dict] = {}
        self.launched: list[str] = []
        self.no_capacity: set[str] = set()  # GPUs that raise CapacityError
        self.broken = False  # every launch raises ProviderError
        self.stuck = False  # every terminate raises ProviderError (the machine keeps billing)
        self.terminated: list[str] = []

    def offers(self, gpu_pool, cuda):
        found = [Offer(g, self.prices[g], self.name, vram_gb=VRAM.get(g, 24), cuda_versions=("12.8", "13.0"))
                 for g in gpu_pool if g in self.prices]
        return sorted(found, key=lambda o: o.usd_per_hour)

    def launch(self, name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> InstanceInfo:
        if name in self.instances:
            return self.get(name)
        if self.broken:
            raise ProviderError("API unreachable")
        if offer.gpu in self.no_capacity:
            raise CapacityError(f"{offer.gpu} sold out")
        self.instances[name] = {"state": RUNNING, "labels": dict(spec.labels), "offer": offer, "token": join_token}
        self.launched.append(name)
        return self.get(name)

    def get(self, name):
        i = self.instances.get(name)
        return InstanceInfo(name, i["state"], i["labels"]) if i else None

    def list(self, labels):
        return [self.get(n) for n, i in self.instances.items() if matches(i["labels"], labels)]

    def terminate(self, name):
        if self.stuck:
            raise ProviderError("terminate timed out")
        if self.instances.pop(name, None) is not None:
            self.terminated.append(name)

    # --- scripting
    def preempt(self, name):
        self.instances[name]["state"] = PREEMPTED

    def register(self, name):
        """The instance's agent boots and registers (one GPU of the offer's name and VRAM)."""
        from workers import services

        i = self.instances[name]
        offer = i["offer"]
        gpu = {"index": 0, "name": offer.gpu, "memory_total_mb": offer.vram_gb * 1024}
        worker, _ = services.worker_register(join_token=i["token"], payload={"name": name, "gpus": [gpu]})
        return worker

    def billed(self) -> Decimal:
        return sum((i["offer"].usd_per_hour for i in self.instances.values() if i["state"] == RUNNING), Decimal(0))
