"""The capacity-provider interface: a provider only makes machines appear and disappear.

Each machine runs the same agent as a private host (`python -m workers.agent`, or the zipapp served
at /agent/inferencekey-agent.pyz) with a one-time join token, and registers like any worker. State
lives in our `Instance` rows (workers/models.py); adapters translate, they keep nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

# Labels every managed instance carries; `list(MANAGED)` finds crash leftovers.
MANAGED_LABEL = "inferencekey.io/managed"
WORKLOAD_LABEL = "inferencekey.io/workload"
MANAGED = {MANAGED_LABEL: "true"}


class ProviderError(Exception):
    """The provider failed (API down, bad credentials): retry later, same offer."""


class CapacityError(ProviderError):
    """No capacity (or quota) for this offer right now: try the next GPU of the pool."""


@dataclass(frozen=True)
class Offer:
    gpu: str  # catalog display name
    usd_per_hour: Decimal
    provider: str
    vram_gb: int = 0
    cuda_versions: tuple[str, ...] = ()
    gpu_count: int = 1
    spot: bool = False
    region: str = ""
    accelerator: str = ""  # the provider's own name for the GPU (SkyPilot accelerator, node product label)

    def as_json(self) -> dict:
        data = asdict(self)
        data["usd_per_hour"] = str(self.usd_per_hour)
        data["cuda_versions"] = list(self.cuda_versions)
        return data

    @classmethod
    def from_json(cls, data: dict) -> Offer:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["usd_per_hour"] = Decimal(str(fields.get("usd_per_hour", "0")))
        fields["cuda_versions"] = tuple(fields.get("cuda_versions") or ())
        return cls(**fields)


# Provider-side states (InstanceInfo.state).
PENDING, RUNNING, FAILED, PREEMPTED, TERMINATED = "pending", "running", "failed", "preempted", "terminated"
GONE = (FAILED, PREEMPTED, TERMINATED)


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    state: str  # pending | running | failed | preempted | terminated
    labels: dict = field(default_factory=dict)
    provider_id: str = ""
    message: str = ""


@dataclass(frozen=True)
class LaunchSpec:
    """What every instance needs besides its offer: where to register, and labels."""

    server_url: str
    labels: dict


@runtime_checkable
class CapacityProvider(Protocol):
    name: str

    def offers(self, gpu_pool: list[str], cuda: list[str] | None) -> list[Offer]:
        """Offers for the pool's GPUs (that can run one of `cuda`, when given), cheapest first."""
        ...

    def launch(self, name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> InstanceInfo:
        """Start a machine named `name` running the agent. Idempotent by name: a second call
        returns the existing instance. Returns quickly (state pending). CapacityError: try another offer."""
        ...

    def get(self, name: str) -> InstanceInfo | None:
        """The instance, or None when the provider has no such machine."""
        ...

    def list(self, labels: dict) -> list[InstanceInfo]:
        """Instances carrying all of `labels` (orphan sweeps after a crash)."""
        ...

    def terminate(self, name: str) -> None:
        """Stop and delete the machine. Idempotent: an unknown name is not an error."""
        ...


def matches(labels: dict, wanted: dict) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
