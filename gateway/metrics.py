"""In-memory request counters of this gateway process, per workload and per replica.

Read by the autoscaler through gateway/wake.py (published to workloads/demand.py): `snapshot()` returns
`{workload_id: {"inflight": n, "requests_total": n, "errors_total": n}}`.

* `requests_total` counts every request that reached a known workload with a valid key
  (including the ones answered 503 because no replica was ready: that is demand too).
* `errors_total` counts those that ended with a 5xx (from us or from the engine) or with a
  stream broken mid-way. Client mistakes (4xx) are not errors of the workload.
* `inflight` is the number of requests currently being proxied (from replica choice until the
  last byte has been sent to the client).
* `held` (not in `snapshot()`): requests waiting for a ready replica (scale from zero).

Updated from the event loop only (no awaits inside an update): plain dicts, no locks. The
counters are per process: with several gateway processes, the autoscaler sums them.
"""
from __future__ import annotations

_workloads: dict[str, list[int]] = {}  # workload_id -> [inflight, requests_total, errors_total, held]
_replicas: dict[str, int] = {}  # replica_id -> inflight


def _row(workload_id: str) -> list[int]:
    row = _workloads.get(workload_id)
    if row is None:
        row = _workloads[workload_id] = [0, 0, 0, 0]
    return row


def request_started(workload_id: str) -> None:
    _row(workload_id)[1] += 1


def request_failed(workload_id: str) -> None:
    _row(workload_id)[2] += 1


def inflight_add(workload_id: str, delta: int) -> None:
    _row(workload_id)[0] += delta


def held_add(workload_id: str, delta: int) -> int:
    """Requests held waiting for a ready replica (gateway/wake.py); returns the new count."""
    row = _row(workload_id)
    row[3] += delta
    return row[3]


def demand_snapshot() -> dict[str, tuple[int, int, int]]:
    """{workload_id: (inflight, held, requests_total)} for the demand publisher (gateway/wake.py)."""
    return {wid: (row[0], row[3], row[1]) for wid, row in list(_workloads.items())}


def replica_inflight(replica_id: str) -> int:
    return _replicas.get(replica_id, 0)


def replica_add(replica_id: str, delta: int) -> None:
    n = _replicas.get(replica_id, 0) + delta
    if n:
        _replicas[replica_id] = n
    else:
        _replicas.pop(replica_id, None)


def snapshot() -> dict[str, dict[str, int]]:
    """Per-workload counters of this process (a copy)."""
    # list(): one C-level pass under the GIL, so a reader in another thread sees no resize error.
    return {
        wid: {"inflight": row[0], "requests_total": row[1], "errors_total": row[2]}
        for wid, row in list(_workloads.items())
    }


def replica_snapshot() -> dict[str, int]:
    """In-flight requests per replica id (only replicas with requests in flight)."""
    return dict(list(_replicas.items()))


def reset() -> None:
    """Forget everything (tests)."""
    _workloads.clear()
    _replicas.clear()
