"""p50/p95 of an SDK `ensure()` that changes nothing, with 1,000 workloads in the project.

Baselines measured in the same run, interleaved: `GET /healthz` (the server floor) and the raw list
call `GET /api/projects/{p}/workloads` that ensure() makes first.

    .venv/bin/python bench/bench_ensure.py [--workloads 1000] [--iterations 300]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/bench_ensure.py
"""
from __future__ import annotations

import argparse
import time

import httpx
from _stack import free_port, percentiles, setup_django, start_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    setup_django()
    from django.db import connection
    from inferencekey import ManagementClient, WorkloadSpec

    from accounts import services
    from workloads.models import Workload
    from workloads.services import workload_create

    user = services.user_get_or_create(email="bench@example.com")
    team = services.team_create(name=f"bench-{time.time_ns()}", owner=user)
    project = services.project_create(team=team, name="bench")
    token = services.sdk_token_create(project=project).value
    spec = dict(name="Target", slug="target", model="meta-llama/Llama-3.1-8B-Instruct", backend="vllm",
                command="vllm serve meta-llama/Llama-3.1-8B-Instruct", execution_policy="fixed",
                execution_policy_config={"replicas": 1})
    workload_create(project=project, data={"name": "Target", "slug": "target", "model_name": spec["model"], "backend": "vllm",
                                           "config": {"command": spec["command"]}, "execution_policy": "fixed",
                                           "execution_policy_config": {"replicas": 1}})
    template = Workload.objects.get(project=project, slug="target")
    # Baseline: the same no-op ensure() in a project holding only that one workload.
    small = services.project_create(team=team, name="small")
    small_token = services.sdk_token_create(project=small).value
    workload_create(project=small, data={"name": "Target", "slug": "target", "model_name": spec["model"], "backend": "vllm",
                                         "config": {"command": spec["command"]}, "execution_policy": "fixed",
                                         "execution_policy_config": {"replicas": 1}})
    Workload.objects.bulk_create([
        Workload(project=project, name=f"w{i}", slug=f"w{i}", model_name=template.model_name, backend="vllm",
                 config={"command": f"vllm serve model-{i}"}, execution_policy="fixed",
                 execution_policy_config={"replicas": 1}, policy=template.policy)
        for i in range(args.workloads - 1)
    ])
    connection.close()
    port = free_port()
    server = start_server(port)
    base = f"http://127.0.0.1:{port}"
    try:
        mgmt = ManagementClient(base_url=base, sdk_token=token, project=project.slug)
        mgmt_small = ManagementClient(base_url=base, sdk_token=small_token, project=small.slug)
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        ws = WorkloadSpec(**spec)
        for _ in range(20):  # warm up
            mgmt.ensure(ws)
        samples: dict[str, list[float]] = {name: [] for name in (
            "healthz", "list (raw HTTP)", "ensure() no-op, 1 workload", "ensure() no-op (SDK)")}
        calls = {
            "healthz": lambda: http.get("/healthz"),
            "list (raw HTTP)": lambda: http.get(f"/api/projects/{project.slug}/workloads"),
            "ensure() no-op, 1 workload": lambda: mgmt_small.ensure(ws),
            "ensure() no-op (SDK)": lambda: mgmt.ensure(ws),
        }
        for _ in range(args.iterations):
            for name, call in calls.items():  # interleaved, so load drift hits all three alike
                t = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - t)
        after = Workload.objects.get(project=project, slug="target")
        assert after.generation == template.generation, "ensure() must not have changed anything"
        from django.conf import settings

        print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
              f"{Workload.objects.filter(project=project).count()} workloads in the project, {args.iterations} iterations")
        print(f"{'call':<30}{'p50 ms':>10}{'p95 ms':>10}")
        for name, values in samples.items():
            p50, p95 = percentiles(values)
            print(f"{name:<30}{p50:>10.2f}{p95:>10.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
