"""Load the GPU catalog from `catalog/data/gpus.json` (idempotent: upsert by display name)."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "gpus.json"


def read_catalog(path: Path = DATA_FILE) -> dict:
    return json.loads(path.read_text())


def load_catalog(GpuType=None, GpuOffer=None, path: Path = DATA_FILE) -> int:
    """Upsert GPU types and replace their offers. Works with historical models in migrations."""
    if GpuType is None:
        from .models import GpuOffer, GpuType  # noqa: F811
    data = read_catalog(path)
    as_of = date.fromisoformat(data["as_of"]) if data.get("as_of") else None
    for gpu in data["gpus"]:
        fields = {k: gpu.get(k, d) for k, d in (
            ("vendor", ""), ("architecture", ""), ("compute_capability", ""), ("vram_gb", 0),
            ("memory_type", ""), ("segment", "datacenter"), ("cuda_versions", []), ("source", ""),
        )}
        if hasattr(GpuType, "skypilot_name"):  # historical models before the column have none
            fields["skypilot_name"] = gpu.get("skypilot_name", "")
        gpu_type, _ = GpuType.objects.update_or_create(display_name=gpu["display_name"], defaults=fields)
        GpuOffer.objects.filter(gpu_type=gpu_type).delete()
        for offer in data.get("offers", []):
            if offer["gpu"] != gpu["display_name"]:
                continue
            GpuOffer.objects.create(
                gpu_type=gpu_type,
                provider=offer["provider"],
                region=offer.get("region", ""),
                pricing=offer.get("pricing", "on_demand"),
                usd_per_hour=str(offer["usd_per_hour"]),
                source=offer.get("source", ""),
                as_of=date.fromisoformat(offer["as_of"]) if offer.get("as_of") else as_of,
            )
    return len(data["gpus"])
