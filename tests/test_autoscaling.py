"""Private autoscaling against the database: initial scale, scale to zero, wake on held demand,
spreading over the listed workers, and demand summed over gateway processes."""
from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from workers.models import Gpu, Replica, Worker
from workloads import autoscaling, demand, reconcile
from workloads.models import GatewayDemand, Phase, Workload
from workloads.services import workload_create

from .specs import vllm_spec


@pytest.fixture
def local(db):
    return Worker.objects.create(team=None, name="local", accepts_cpu=True, cpu_count=2, state=Worker.State.ONLINE,
                                 last_heartbeat_at=timezone.now())


def private(*workers, min_workers=0, max_workers=2, delay=30, **overrides):
    return vllm_spec(**overrides, execution_policy="autoscaling", execution_policy_config={
        "min_workers": min_workers, "max_workers": max_workers, "scale_down_delay_s": delay,
        "workers": {"source": "private", "private_worker_ids": [w.id for w in workers]}})


def live(workload):
    return Replica.objects.filter(workload=workload, desired=True)


def booted(workload):
    """The agent reported the replicas ready (idle time counts only from then)."""
    live(workload).update(state=Replica.State.READY)


def test_new_autoscaling_workload_starts_one_replica(tenant, local):
    workload = workload_create(project=tenant.project, data=private(local))
    result = reconcile.run(workload.id)
    assert live(workload).count() == 1 and result.phase == Phase.PROVISIONING


def test_idle_workload_scales_to_zero_and_stays_ready(tenant, local):
    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    booted(workload)
    autoscaling.tick(workload.id, timezone.now(), demand.Counts())
    decision = autoscaling.tick(workload.id, timezone.now() + timedelta(seconds=31), demand.Counts())
    workload.refresh_from_db()
    assert decision.target == 0 and live(workload).count() == 0
    assert (workload.phase, workload.message) == (Phase.READY, autoscaling.SCALED_TO_ZERO)


def test_held_request_wakes_a_workload_at_zero(tenant, local):
    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    booted(workload)
    autoscaling.tick(workload.id, timezone.now(), demand.Counts())
    autoscaling.tick(workload.id, timezone.now() + timedelta(seconds=31), demand.Counts())
    demand.publish("gw-1", {workload.id: demand.Counts(inflight=0, held=1, last_request_at=None)})
    decision = autoscaling.tick(workload.id, timezone.now() + timedelta(seconds=32))
    assert decision.target == 1 and live(workload).count() == 1


def test_demand_scales_up_across_the_listed_workers_one_per_gpu(tenant, local):
    boxes = []
    for name in ("a", "b"):
        box = Worker.objects.create(team=tenant.team, name=name, state=Worker.State.ONLINE, last_heartbeat_at=timezone.now())
        Gpu.objects.create(worker=box, index=0, name="NVIDIA L4", memory_total_mb=80000)
        boxes.append(box)
    workload = workload_create(project=tenant.project, data=private(*boxes, max_workers=4))
    reconcile.run(workload.id)
    decision = autoscaling.tick(workload.id, timezone.now(), demand.Counts(inflight=200))
    placed = sorted(live(workload).exclude(worker=None).values_list("worker__name", flat=True))
    assert decision.target == 2 and decision.capped  # 2 GPUs listed: the cap binds before max_workers
    assert placed == ["a", "b"]


def test_unlisted_workers_are_not_used(tenant, local):
    other = Worker.objects.create(team=tenant.team, name="other", accepts_cpu=True, cpu_count=8,
                                  state=Worker.State.ONLINE, last_heartbeat_at=timezone.now())
    workload = workload_create(project=tenant.project, data=private(local, max_workers=4))
    reconcile.run(workload.id)
    autoscaling.tick(workload.id, timezone.now(), demand.Counts(inflight=200))
    assert not live(workload).filter(worker=other).exists()


def test_demand_is_summed_over_processes_and_stale_counts_are_ignored(db):
    demand.publish("gw-1", {"wl_x": demand.Counts(2, 1, 90.0)}, now=100.0)
    demand.publish("gw-2", {"wl_x": demand.Counts(3, 0, 95.0)}, now=100.0)
    demand.publish("gw-3", {"wl_x": demand.Counts(7, 0, 99.0)}, now=100.0 - demand.STALE_S - 1)
    assert demand.read(["wl_x"], now=100.5)["wl_x"] == demand.Counts(5, 1, 99.0)


def test_old_demand_rows_are_forgotten(db):
    demand.publish("gw-old", {"wl_y": demand.Counts(0, 0, 10.0)}, now=10.0)
    demand.forget_old(now=10.0 + demand.KEEP_S + 1)
    assert demand.store() == "redis" or not GatewayDemand.objects.filter(process="gw-old").exists()


def test_steady_idle_tick_writes_nothing(tenant, local):
    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    booted(workload)
    start = timezone.now()
    autoscaling.tick(workload.id, start, demand.Counts())
    autoscaling.tick(workload.id, start + timedelta(seconds=31), demand.Counts())
    before = Workload.objects.get(pk=workload.pk).autoscaler
    with time_machine.travel(start + timedelta(seconds=33)):
        autoscaling.tick(workload.id, start + timedelta(seconds=33), demand.Counts())
    assert Workload.objects.get(pk=workload.pk).autoscaler == before


def test_a_spec_change_at_zero_starts_one_replica(tenant, local):
    from workloads.services import workload_update

    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    booted(workload)
    autoscaling.tick(workload.id, timezone.now(), demand.Counts())
    autoscaling.tick(workload.id, timezone.now() + timedelta(seconds=31), demand.Counts())
    assert live(workload).count() == 0
    workload_update(workload=Workload.objects.get(pk=workload.pk), patch={"description": "v2"})
    reconcile.run(workload.id)
    assert live(workload).count() == 1


def test_admin_lists_gateway_demand_read_only(admin_client):
    demand.publish("gw-admin", {"wl_admin": demand.Counts(1, 2, None)})
    page = admin_client.get("/admin/workloads/gatewaydemand/")
    assert page.status_code == 200 and (demand.store() == "redis" or b"wl_admin" in page.content)
    assert admin_client.get("/admin/workloads/gatewaydemand/add/").status_code == 403


def test_an_unreadable_demand_store_holds_the_target(tenant, local, monkeypatch):
    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    autoscaling.tick(workload.id, timezone.now(), demand.Counts())

    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(demand, "read", down)
    decision = autoscaling.tick(workload.id, timezone.now() + timedelta(seconds=300))
    assert decision.target == 1 and live(workload).count() == 1


def test_summary_shows_demand_target_and_why(tenant, local):
    workload = workload_create(project=tenant.project, data=private(local))
    reconcile.run(workload.id)
    demand.publish("gw-sum", {workload.id: demand.Counts(inflight=3, held=1, last_request_at=None)})
    autoscaling.tick(workload.id)
    info = autoscaling.summary(Workload.objects.get(pk=workload.pk))
    assert (info["demand"], info["held"], info["target"], info["target_inflight_per_replica"]) == (4, 1, 1, 32)
    assert info["reason"]


def test_a_steady_beat_pass_costs_a_few_queries_and_writes_nothing(tenant, local):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for i in range(4):
        workload = workload_create(project=tenant.project, data=private(local, slug=f"w{i}"))
        reconcile.run(workload.id)
        booted(workload)
    start = timezone.now()
    autoscaling.tick_all(start)
    autoscaling.tick_all(start + timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        assert autoscaling.tick_all(start + timedelta(seconds=2)) == 4
    assert len(queries) <= 6  # not per workload
    assert not [q for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]


@pytest.mark.parametrize("broker,throttle,expected", [
    ("filesystem://", "", "database"),
    ("redis://127.0.0.1:6379/7", "", "redis"),
    ("filesystem://", "redis://127.0.0.1:6379/7", "redis"),
])
def test_demand_store_is_redis_when_any_configured_url_is(settings, broker, throttle, expected):
    settings.CELERY_BROKER_URL = broker
    settings.DEMAND_URL = ""
    settings.CACHES = {**settings.CACHES, "throttle": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": throttle} if throttle
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ik_throttle_cache"})}
    demand._redis_url.cache_clear()
    try:
        assert demand.store() == expected
    finally:
        demand._redis_url.cache_clear()
