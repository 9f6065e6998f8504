"""Server render time of dashboard pages: the workloads list with 10,000 workloads in a project,
and GPU Resources. Run on demand (no asserts):

    .venv/bin/python bench/bench_dashboard.py [--workloads 10000] [--runs 50]

Uses a throw-away test database (SQLite under a temporary data dir, or DATABASE_URL's server with
a test_ prefix) and Django's test client, so it measures the view + template + queries, not the
network. Goal: p95 ≤ 150 ms.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferencekey_web.settings")
# Our own data dir: never touch the developer's database or another run's test database.
os.environ["INFERENCEKEY_DATA_DIR"] = tempfile.mkdtemp(prefix="ik-bench-")


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        run(args.workloads, args.runs)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(count: int, runs: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from accounts import services
    from workers.models import Gpu, Worker
    from workloads.models import Phase, Workload

    user = get_user_model().objects.create_user(username="bench@example.com", email="bench@example.com")
    team = services.team_create(name="Bench", owner=user, slug="bench")
    project = services.project_create(team=team, name="Big", slug="big")
    backends = ("vllm", "ollama", "sglang", "llamacpp", "vllm-omni")
    phases = [p.value for p in Phase]
    started = time.perf_counter()
    Workload.objects.bulk_create(
        (Workload(project=project, name=f"Workload {i:05}", slug=f"workload-{i:05}", model_name=f"org/model-{i % 97}",
                  backend=backends[i % len(backends)], phase=phases[i % len(phases)],
                  execution_policy=("fixed", "scheduled", "autoscaling", None)[i % 4],
                  config={"command": f"vllm serve org/model-{i % 97}"} if i % 5 in (0, 3, 4) else None)
         for i in range(count)),
        batch_size=1000,
    )
    for w in range(8):  # a realistic team: a few workers with GPUs
        worker = Worker.objects.create(team=team, name=f"box-{w}", state="online")
        Gpu.objects.bulk_create(Gpu(worker=worker, index=i, name="NVIDIA L40S", memory_total_mb=46068) for i in range(4))
    print(f"setup: {count:,} workloads in {time.perf_counter() - started:.1f} s "
          f"({connection.vendor}, Django test client, {runs} runs per page)\n")

    client = Client()
    client.force_login(user)
    pages = [
        ("workloads list, page 1", "/t/bench/p/big/workloads/"),
        ("workloads list, page 200", "/t/bench/p/big/workloads/?page=200"),
        ("workloads list, search", "/t/bench/p/big/workloads/?q=model-42"),
        ("workloads list, 3 filters (htmx)", "/t/bench/p/big/workloads/?backend=vllm&status=ready&policy=fixed"),
        ("GPU Resources", "/t/bench/gpus/"),
        ("GPU Resources, by price, CUDA 13.0", "/t/bench/gpus/?sort=price&cuda=13.0"),
    ]
    print(f"{'page':<38} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8}")
    for label, url in pages:
        headers = {"HTTP_HX_REQUEST": "true"} if "htmx" in label else {}
        client.get(url, **headers)  # warm caches (templates, catalog)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            response = client.get(url, **headers)
            samples.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        with CaptureQueriesContext(connection) as queries:
            client.get(url, **headers)
        print(f"{label:<38} {statistics.median(samples):8.1f} {percentile(samples, 95):8.1f} {max(samples):8.1f} "
              f"{len(queries):8d}")


if __name__ == "__main__":
    main()
