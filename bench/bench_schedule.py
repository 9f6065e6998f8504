"""Scheduled workloads at scale: the cold reconcile pass and the steady beat sweep.

Sets up N scheduled workloads (default 10,000) over 20 teams, each team with one online worker
(8 × 80 GB GPUs, CPU-capable), a dozen window and cron schedules in several zones, every workload
never reconciled (a cold start: just created, or a restored database). Then, in one run:

1. baseline: the old path, `reconcile.run()` once per workload, over the first `--baseline` (1,000)
   workloads; then the same workloads swept again with nothing to do, as the old sweep did
   (it re-reconciled every scheduled workload on every pass);
2. the cold pass over all N: `reconcile.run_many()` (what the sweep's batch task runs);
3. the steady sweep: `lagging_workloads()` + `run_many()` of what it returns, 5 times: time,
   workloads reconciled and write statements (INSERT/UPDATE/DELETE);
4. the next transition: the sweep at the earliest stored `next_transition_at` (the workloads whose
   schedule changes then are due; the rest are not read).

Between 2 and 3 the placed replicas are marked ready, as their agents would report.

    .venv/bin/python bench/bench_schedule.py [--workloads 10000] [--baseline 1000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_schedule .venv/bin/python bench/bench_schedule.py
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

from _stack import setup_django

SCHEDULES = [
    {"window": "Mon-Fri 08:00-20:00 Europe/Madrid"},
    {"window": "Daily 22:00-06:00 America/New_York"},
    {"window": "Sat-Sun 00:00-24:00 UTC"},
    {"window": "Mon,Wed,Fri 09:30-17:30 Asia/Tokyo"},
    {"window": "Daily 06:00-23:00 Europe/London"},
    {"window": "Tue-Thu 12:00-13:00 America/Los_Angeles"},
    {"cron": "0 2 * * *", "duration_minutes": 120},
    {"cron": "*/30 * * * *", "duration_minutes": 10, "timezone": "Europe/Berlin"},
    {"cron": "0 */4 * * *", "duration_minutes": 90, "timezone": "Asia/Kolkata"},
    {"cron": "15 9 * * 1-5", "duration_minutes": 480, "timezone": "America/Chicago"},
    {"cron": "0 0 1 * *", "duration_minutes": 1440},
    {"cron": "0 12 * * *", "duration_minutes": 720, "timezone": "Australia/Sydney"},
]


@contextmanager
def counting():
    """Counts statements by kind on the default connection."""
    from django.db import connection

    counts = {"select": 0, "write": 0}

    def wrapper(execute, sql, params, many, context):
        head = sql.lstrip().split(None, 1)[0].upper()
        counts["write" if head in ("INSERT", "UPDATE", "DELETE") else "select"] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield counts


def setup(n: int):
    from django.utils import timezone

    from accounts import services
    from workers.models import Gpu, Worker
    from workloads import policies
    from workloads.models import Phase, ReadinessEvent, Workload

    user = services.user_get_or_create(email="bench@example.com")
    teams = 20
    projects = []
    for t in range(teams):
        team = services.team_create(name=f"bench-{t}-{time.time_ns()}", owner=user)
        projects.append(services.project_create(team=team, name="sched"))
        worker = Worker.objects.create(team=team, name=f"gpu-host-{t}", state=Worker.State.ONLINE, accepts_cpu=True,
                                       last_heartbeat_at=timezone.now(), address=f"10.0.{t}.1")
        Gpu.objects.bulk_create([Gpu(worker=worker, index=i, name="NVIDIA A100-SXM4-80GB", memory_total_mb=81920)
                                 for i in range(8)])
    parsed = [policies.parse("scheduled", s) for s in SCHEDULES]
    rows = []
    for i in range(n):
        k = i % len(SCHEDULES)
        rows.append(Workload(
            project=projects[i % teams], name=f"s{i}", slug=f"s{i}", model_name="Qwen/Qwen2.5-0.5B-Instruct",
            backend="vllm", config={"command": "vllm serve Qwen/Qwen2.5-0.5B-Instruct"},
            execution_policy="scheduled", execution_policy_config=SCHEDULES[k], policy=parsed[k],
        ))
    Workload.objects.bulk_create(rows, batch_size=1000)
    ids = list(Workload.objects.order_by("created_at", "id").values_list("id", flat=True))
    ReadinessEvent.objects.bulk_create([ReadinessEvent(workload_id=w, generation=1, phase=Phase.SCHEDULING, step="accepted",
                                                       message="Workload accepted; waiting for the reconciler") for w in ids],
                                       batch_size=1000)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=10000)
    parser.add_argument("--baseline", type=int, default=1000)
    args = parser.parse_args()
    setup_django()
    from django.db import connection
    from django.utils import timezone

    from workers.models import Replica, Worker
    from workloads import reconcile
    from workloads.models import Phase, Workload

    t0 = time.perf_counter()
    ids = setup(args.workloads)
    print(f"{connection.vendor}: {len(ids):,} scheduled workloads set up in {time.perf_counter() - t0:.1f} s")
    base_ids, rest = ids[: args.baseline], ids[args.baseline:]
    rows = []

    # 1. Baseline: one run() per workload (the old sweep's task body), cold then again.
    with counting() as q:
        t0 = time.perf_counter()
        for wid in base_ids:
            reconcile.run(wid)
        cold_old = time.perf_counter() - t0
    rows.append((f"old path: run() per workload, cold, {len(base_ids):,}", cold_old, len(base_ids), q))
    with counting() as q:
        t0 = time.perf_counter()
        for wid in base_ids:
            reconcile.run(wid)
        steady_old = time.perf_counter() - t0
    rows.append((f"old sweep: every scheduled one again, {len(base_ids):,}", steady_old, len(base_ids), q))

    # 2. The cold pass over the rest with run_many (the baseline's workloads are warm by now).
    with counting() as q:
        t0 = time.perf_counter()
        counts = reconcile.run_many(rest)
        cold_new = time.perf_counter() - t0
    rows.append((f"cold pass: run_many, {len(rest):,} ({counts['run']:,} placed one by one)", cold_new, len(rest), q))
    active = Workload.objects.exclude(phase=Phase.STOPPED).count()

    # The agents start the placed engines and report them ready; one sweep settles those workloads.
    Replica.objects.filter(desired=True).update(state=Replica.State.READY)
    Worker.objects.update(last_heartbeat_at=timezone.now())
    reconcile.run_many(reconcile.lagging_workloads())

    # 3. The steady sweep (nothing due): what beat runs every few seconds.
    for i in range(5):
        Worker.objects.update(last_heartbeat_at=timezone.now())  # the agents keep beating
        with counting() as q:
            t0 = time.perf_counter()
            due = reconcile.lagging_workloads()
            reconcile.run_many(due)
            took = time.perf_counter() - t0
        rows.append((f"steady sweep #{i + 1} ({len(due)} due)", took, len(due), q))

    # 4. The sweep at the next schedule change: only those due then are reconciled.
    nxt = Workload.objects.exclude(next_transition_at=None).order_by("next_transition_at").values_list("next_transition_at", flat=True).first()
    if nxt is not None:
        Worker.objects.update(last_heartbeat_at=nxt)
        with counting() as q:
            t0 = time.perf_counter()
            due = reconcile.lagging_workloads(nxt)
            counts = reconcile.run_many(due, nxt)
            took = time.perf_counter() - t0
        rows.append((f"sweep at the next change ({nxt:%a %H:%M} UTC: {len(due):,} due)", took, len(due), q))

    print(f"now {timezone.now():%a %Y-%m-%d %H:%M} UTC: {active:,} of {len(ids):,} workloads inside their schedule (replicas placed)")
    print(f"{'':64} {'seconds':>8} {'ms/wl':>7} {'selects':>8} {'writes':>7}")
    for name, took, n, q in rows:
        per = f"{took / n * 1000:.2f}" if n else "-"
        print(f"{name:64} {took:8.3f} {per:>7} {q['select']:8,} {q['write']:7,}")
    print(f"cold pass over {args.workloads:,} workloads, extrapolated from the old path: "
          f"{cold_old / len(base_ids) * args.workloads:.1f} s; run_many measured on {len(rest):,}: {cold_new:.1f} s "
          f"(≈ {cold_new / len(rest) * args.workloads:.1f} s for {args.workloads:,})")


if __name__ == "__main__":
    main()
