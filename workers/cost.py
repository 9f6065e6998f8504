"""Cost ceilings for cloud autoscaling: pure arithmetic, no Django (the validator and the capacity
converger both use it, so they cannot disagree).

ceiling = min(max_hourly_cost_usd, cloud_pool.max_hourly_cost_usd)
cap     = min(max_workers, max_instances, floor(ceiling / price of the cheapest eligible GPU))
A GPU of the pool is eligible when it has a price and, if the pool pins CUDA versions, can run
one of them. Decimal arithmetic: 1.29 / 0.43 is 3 instances, not 2.999….
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


def money(value) -> Decimal:
    return Decimal(str(value))


def ceiling(policy: dict) -> Decimal | None:
    """The hourly cost ceiling of a normalised autoscaling policy (None: no ceiling given)."""
    values = [money(v) for v in (policy.get("max_hourly_cost_usd"), policy.get("pool_max_hourly_cost_usd")) if v]
    return min(values) if values else None


def ceiling_field(policy: dict) -> str:
    """The config key whose value is the ceiling (the pool's when it is the smaller)."""
    own, pool = policy.get("max_hourly_cost_usd"), policy.get("pool_max_hourly_cost_usd")
    if pool and (not own or money(pool) < money(own)):
        return "workers.cloud_pool.max_hourly_cost_usd"
    return "max_hourly_cost_usd"


@dataclass(frozen=True)
class PricedGpu:
    name: str
    usd_per_hour: Decimal


def eligible_gpus(pool: list[str], prices: dict[str, object], cuda_by_gpu: dict[str, list[str]] | None = None,
                  allowed_cuda: list[str] | None = None) -> list[PricedGpu]:
    """The pool's GPUs that have a price and meet `allowed_cuda`, cheapest first (pool order breaks ties)."""
    out = []
    for name in pool:
        if name not in prices or prices[name] is None:
            continue
        if allowed_cuda and not set(allowed_cuda) & set((cuda_by_gpu or {}).get(name, [])):
            continue
        out.append(PricedGpu(name, money(prices[name])))
    return sorted(out, key=lambda g: g.usd_per_hour)  # stable: equal prices keep the pool's order


@dataclass(frozen=True)
class Cap:
    workers: int  # at most this many instances at once
    by_cost: bool  # the ceiling (not max_workers / max_instances) is what binds
    reason: str  # for the workload's message when it binds


def cap(policy: dict, cheapest: PricedGpu | None) -> Cap:
    limits = [int(policy.get("max_workers") or 1)]
    if policy.get("max_instances"):
        limits.append(int(policy["max_instances"]))
    count_cap = min(limits)
    top = ceiling(policy)
    if cheapest is None:
        return Cap(0, False, "no GPU of the pool has a price and meets allowed_cuda_versions")
    if top is None or cheapest.usd_per_hour <= 0:
        return Cap(count_cap, False, "")
    by_cost = int(top // cheapest.usd_per_hour)
    if by_cost < count_cap:
        return Cap(by_cost, True, f"capped at {by_cost} worker(s) by {ceiling_field(policy)} "
                                  f"(${top}/h; {cheapest.name} at ${cheapest.usd_per_hour}/h)")
    return Cap(count_cap, False, "")


def affordable(running_usd_per_hour: Decimal, price: Decimal, policy: dict) -> bool:
    """Whether one more instance at `price` keeps the running hourly cost within the ceiling."""
    top = ceiling(policy)
    return top is None or running_usd_per_hour + price <= top
