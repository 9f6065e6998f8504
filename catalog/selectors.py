"""Catalog reads used by the spec validator and the dashboard."""
from __future__ import annotations

import difflib

from .models import GpuType


def gpu_names() -> dict[str, list[str]]:
    """Display name → CUDA versions it can run."""
    return dict(GpuType.objects.values_list("display_name", "cuda_versions"))


def close_matches(name: str, names) -> list[str]:
    lowered = {n.lower(): n for n in names}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    return [lowered[h] for h in hits]
