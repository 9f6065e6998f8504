"""Offers from the project's GPU catalog (catalog/): the price every provider quotes unless it has
its own price list. One price per GPU: the cheapest on-demand offer, as the validator uses."""
from __future__ import annotations

from decimal import Decimal

from .base import Offer


def catalog_offers(provider: str, gpu_pool: list[str], cuda: list[str] | None,
                   accelerator_of=lambda gpu: "") -> list[Offer]:
    from catalog.models import GpuType

    out = []
    for gpu in GpuType.objects.filter(display_name__in=list(gpu_pool)).prefetch_related("offers"):
        cheapest = gpu.cheapest_offer
        if cheapest is None:
            continue
        if cuda and not set(cuda) & set(gpu.cuda_versions or []):
            continue
        accelerator = accelerator_of(gpu)
        if accelerator is None:
            continue  # this provider cannot run this GPU
        out.append(Offer(gpu=gpu.display_name, usd_per_hour=Decimal(str(cheapest.usd_per_hour)), provider=provider,
                         vram_gb=gpu.vram_gb, cuda_versions=tuple(gpu.cuda_versions or ()), accelerator=accelerator))
    order = {name: i for i, name in enumerate(gpu_pool)}
    return sorted(out, key=lambda o: (o.usd_per_hour, order.get(o.gpu, 0)))
