"""Catalog reads for the dashboard: GPU rows with their cheapest price, and pool cost projections."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .models import GpuType

HOURS_PER_MONTH = 730  # the usual cloud month


@dataclass(frozen=True)
class GpuRow:
    gpu: GpuType
    usd_per_hour: Decimal | None  # cheapest on-demand offer (any offer if none is on-demand)
    provider: str

    @property
    def usd_per_month(self) -> Decimal | None:
        return None if self.usd_per_hour is None else self.usd_per_hour * HOURS_PER_MONTH


def gpu_rows() -> list[GpuRow]:
    rows = []
    for gpu in GpuType.objects.prefetch_related("offers"):
        offer = gpu.cheapest_offer
        rows.append(GpuRow(gpu, offer.usd_per_hour if offer else None, offer.provider if offer else ""))
    return rows


def cuda_versions() -> list[str]:
    versions = {v for vs in GpuType.objects.values_list("cuda_versions", flat=True) for v in vs}
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()), reverse=True)


def gpu_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in GpuType.objects.order_by("display_name").values_list("display_name", flat=True)]


def price_by_gpu() -> dict[str, Decimal]:
    return {row.gpu.display_name: row.usd_per_hour for row in gpu_rows() if row.usd_per_hour is not None}


@dataclass(frozen=True)
class PoolProjection:
    at_min: Decimal | None  # min workers on the cheapest GPU of the pool
    at_max: Decimal | None  # max workers on the priciest GPU of the pool (the worst case)
    capped_at: int | None  # workers the cost ceiling allows on the cheapest GPU, when it binds
    ceiling: Decimal | None = None  # the smaller of the two ceilings, when one is set
    cheapest: Decimal | None = None  # the cheapest GPU of the pool, $/h

    @property
    def within_ceiling(self) -> bool | None:
        """Whether max workers on the priciest GPU stay under the ceiling (None: no ceiling)."""
        if self.ceiling is None or self.at_max is None:
            return None
        return self.at_max <= self.ceiling

    @property
    def below_cheapest(self) -> bool:
        """A ceiling that buys not even one worker of the cheapest GPU (the validator refuses it)."""
        return self.ceiling is not None and self.cheapest is not None and self.ceiling < self.cheapest


def _money(value) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except ArithmeticError:
        return None


def project_pool_cost(pool: list[str], min_workers, max_workers, ceiling, pool_ceiling=None) -> PoolProjection:
    """The pool's projected $/h at min and max workers, compared with the ceiling that applies:
    the smaller of `max_hourly_cost_usd` and `cloud_pool.max_hourly_cost_usd`."""
    prices = price_by_gpu()
    known = [prices[name] for name in pool if name in prices]
    if not known:
        return PoolProjection(None, None, None)
    low, high = min(known), max(known)
    ceilings = [c for c in (_money(ceiling), _money(pool_ceiling)) if c is not None and c > 0]
    limit = min(ceilings) if ceilings else None
    at_min = low * int(min_workers or 0)
    at_max = high * int(max_workers) if max_workers else None
    capped = None
    if limit is not None and max_workers and low * int(max_workers) > limit:
        capped = int(limit // low)
    return PoolProjection(at_min, at_max, capped, limit, low)
