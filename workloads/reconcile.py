"""Level-triggered reconcile (filled in by the end-to-end work)."""
from __future__ import annotations


def run(workload_id: str) -> None:
    return None


def lagging_workloads() -> list[str]:
    return []
