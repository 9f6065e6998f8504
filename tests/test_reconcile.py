"""Reconcile: the pure plan, placement, and run() against the database."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from workers import services as worker_services
from workers.models import Gpu, Replica, Worker
from workloads import reconcile
from workloads.models import Phase, ReadinessEvent, Workload
from workloads.reconcile import Desired, Observed, plan, status
from workloads.services import workload_create, workload_delete, workload_update

from .specs import vllm_spec

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def obs(i: int, *, gen: int = 1, state: str = "ready", placed: bool = True, worker_state: str = "online", seen=NOW):
    return Observed(id=f"rep_{i}", generation=gen, state=state, placed=placed, worker_state=worker_state,
                    worker_seen_at=seen, created_at=NOW - timedelta(minutes=10 - i))


def test_plan_creates_missing_replicas():
    assert plan(Desired(1, 3), [obs(1)], NOW).create == 2


def test_plan_is_a_noop_when_converged():
    result = plan(Desired(1, 2), [obs(1), obs(2)], NOW)
    assert (result.create, result.drain, result.place) == (0, [], [])


def test_plan_scales_down_not_ready_first():
    result = plan(Desired(1, 1), [obs(1), obs(2, state="starting")], NOW)
    assert [r for r, _ in result.drain] == ["rep_2"]


def test_plan_keeps_old_ready_replica_until_new_one_is_ready():
    result = plan(Desired(2, 1), [obs(1, gen=1), obs(2, gen=2, state="starting")], NOW)
    assert result.drain == [] and result.create == 0
    result = plan(Desired(2, 1), [obs(1, gen=1), obs(2, gen=2, state="ready")], NOW)
    assert [r for r, _ in result.drain] == ["rep_1"]


def test_plan_keeps_a_ready_replica_of_a_draining_worker_until_its_replacement_is_ready():
    moving = plan(Desired(1, 1), [obs(1, worker_state="draining")], NOW)
    assert moving.drain == [] and moving.create == 1
    moved = plan(Desired(1, 1), [obs(1, worker_state="draining"), obs(2, state="ready")], NOW)
    assert [r for r, _ in moved.drain] == ["rep_1"] and moved.create == 0


def test_plan_reschedules_replicas_of_a_long_silent_worker(settings):
    settings.WORKER_OFFLINE_AFTER_S, settings.WORKER_RESCHEDULE_AFTER_S = 60, 120
    blip = plan(Desired(1, 1), [obs(1, seen=NOW - timedelta(seconds=90))], NOW)
    gone = plan(Desired(1, 1), [obs(1, seen=NOW - timedelta(seconds=200))], NOW)
    assert blip.drain == [] and blip.create == 0
    assert [r for r, _ in gone.drain] == ["rep_1"] and gone.create == 1


def test_plan_places_unplaced_current_replicas():
    assert plan(Desired(1, 1), [obs(1, placed=False, state="pending")], NOW).place == ["rep_1"]


def test_status_phases_follow_replicas():
    assert status(Desired(1, 1), [obs(1)]).phase == Phase.READY
    assert status(Desired(1, 1), [obs(1, state="placed")]).phase == Phase.PROVISIONING
    assert status(Desired(1, 1), [obs(1, state="starting")]).phase == Phase.BOOTSTRAPPING
    assert status(Desired(1, 1), [obs(1, state="failed")]).phase == Phase.ERROR
    assert status(Desired(1, 1), [], unplaceable="no worker").phase == Phase.SCHEDULING
    assert status(Desired(1, 0), []).phase == Phase.STOPPED
    assert status(Desired(1, None), []).phase == Phase.PENDING


@pytest.fixture
def cpu_worker(db):
    worker = Worker.objects.create(team=None, name="local", accepts_cpu=True, state=Worker.State.ONLINE,
                                   last_heartbeat_at=timezone.now())
    return worker


@pytest.fixture
def gpu_worker(tenant):
    worker = Worker.objects.create(team=tenant.team, name="box", state=Worker.State.ONLINE, last_heartbeat_at=timezone.now())
    Gpu.objects.create(worker=worker, index=0, name="NVIDIA L4", memory_total_mb=23034)
    return worker


def test_run_places_a_fixed_replica_on_a_cpu_worker(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    result = reconcile.run(workload.id)
    replica = Replica.objects.get(workload=workload)
    assert result.phase == Phase.PROVISIONING
    assert (replica.worker, replica.state, replica.port) == (cpu_worker, Replica.State.PLACED, 20000)
    assert replica.launch["argv"][-4:] == ["--host", "127.0.0.1", "--port", "20000"]


def test_run_twice_changes_nothing(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    before = list(Replica.objects.values("id", "state", "port"))
    events = ReadinessEvent.objects.count()
    reconcile.run(workload.id)
    assert list(Replica.objects.values("id", "state", "port")) == before
    assert ReadinessEvent.objects.count() == events


def test_run_without_workers_says_why(tenant):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    result = reconcile.run(workload.id)
    assert result.phase == Phase.SCHEDULING and "no online worker" in result.message


def test_gpu_placement_uses_free_vram(tenant, gpu_worker):
    small = workload_create(project=tenant.project, data=vllm_spec(slug="small", model_name="Qwen/Qwen2-0.5B"))
    big = workload_create(project=tenant.project, data=vllm_spec(slug="big", model_name="meta-llama/Llama-3.1-70B"))
    reconcile.run(small.id)
    result = reconcile.run(big.id)
    assert list(Replica.objects.get(workload=small).gpus.values_list("index", flat=True)) == [0]
    assert result.phase == Phase.SCHEDULING and "GiB of free GPU memory" in result.message


def test_pinned_worker_is_used(tenant, cpu_worker, gpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec(model_name="Qwen/Qwen2-0.5B", worker_id=gpu_worker.id))
    reconcile.run(workload.id)
    assert Replica.objects.get(workload=workload).worker == gpu_worker


def test_fixed_zero_stops(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec(execution_policy="fixed", execution_policy_config={"replicas": 0}))
    assert reconcile.run(workload.id).phase == Phase.STOPPED
    assert not Replica.objects.exists()


def test_spec_change_rolls_replicas(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    first = Replica.objects.get()
    workload_update(workload=workload, patch={"config": {"command": "vllm serve other"}})
    reconcile.run(workload.id)
    assert Replica.objects.filter(desired=True).exclude(pk=first.pk).count() == 1
    assert not Replica.objects.get(pk=first.pk).desired  # it was not ready: replaced at once


def test_delete_marks_replicas_undesired(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    workload_delete(workload=workload)
    replica = Replica.objects.get()
    assert replica.workload is None and replica.desired is False


def test_heartbeat_reports_drive_the_phase(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    replica = Replica.objects.get()
    desired, changed = worker_services.worker_heartbeat(worker=cpu_worker, payload={"replicas": [
        {"id": replica.id, "state": "ready", "pid": 42, "message": "health check passed"}]})
    assert [r["id"] for r in desired] == [replica.id] and changed == {workload.id}
    assert reconcile.run(workload.id).phase == Phase.READY
    assert Workload.objects.get().ready_replicas == 1


def test_ports_are_unique_per_host_across_workers(tenant, cpu_worker):
    # A second agent on the same machine (same address): its engines must not get the same ports.
    Worker.objects.create(team=tenant.team, name="mine", state=Worker.State.ONLINE, accepts_cpu=True,
                          last_heartbeat_at=timezone.now())
    ports = set()
    for slug in ("a", "b", "c"):
        workload = workload_create(project=tenant.project, data=vllm_spec(slug=slug))
        reconcile.run(workload.id)
        ports.add(Replica.objects.get(workload=workload).port)
    assert len(set(Replica.objects.values_list("worker", flat=True))) == 2 and len(ports) == 3


def test_the_gateway_follows_the_port_the_agent_reports(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    replica = Replica.objects.get()
    report = {"id": replica.id, "state": "ready", "port": 20005, "spec_hash": replica.spec_hash}
    desired, _ = worker_services.worker_heartbeat(worker=cpu_worker, payload={"replicas": [report]})
    assert Replica.objects.get().port == 20005
    assert desired[0]["port"] == 20000 and desired[0]["argv"][-1] == "20000"  # what argv was rendered with


def test_a_draining_report_keeps_the_replica_out_of_the_route_table(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    replica = Replica.objects.get()
    workload_update(workload=workload, patch={"config": {"command": "vllm serve other"}})
    worker_services.worker_heartbeat(worker=cpu_worker, payload={"replicas": [{"id": replica.id, "state": "draining"}]})
    assert Replica.objects.get(pk=replica.pk).state == Replica.State.DRAINING


def test_an_update_that_does_not_fit_beside_the_old_replica_replaces_it(tenant, gpu_worker):
    # Llama-3.1-8B needs ~19.9 GiB of the L4's 22.5: the old and the new replica cannot both run.
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    old = Replica.objects.get()
    worker_services.worker_heartbeat(worker=gpu_worker, payload={"replicas": [{"id": old.id, "state": "ready"}]})
    workload_update(workload=workload, patch={"config": {"command": "vllm serve meta-llama/Llama-3.1-8B-Instruct"}})
    reconcile.run(workload.id)
    assert Replica.objects.get(pk=old.pk).desired is False  # drained to make room, not kept forever
    _, changed = worker_services.worker_heartbeat(worker=gpu_worker, payload={"replicas": [{"id": old.id, "state": "stopped"}]})
    assert changed == {workload.id}
    reconcile.run(workload.id)
    assert Replica.objects.get().worker == gpu_worker and Replica.objects.get().port is not None


def test_stopped_report_of_undesired_replica_frees_it(tenant, cpu_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    replica = Replica.objects.get()
    workload_delete(workload=workload)
    desired, _ = worker_services.worker_heartbeat(worker=cpu_worker, payload={"replicas": [{"id": replica.id, "state": "stopped"}]})
    assert desired == [] and not Replica.objects.exists()


def test_cloud_autoscaling_provisions_an_instance_instead_of_using_other_workers(tenant, cpu_worker):
    from workers import providers

    from .capacity.fake_provider import FakeProvider
    from .specs import CLOUD_AUTOSCALING

    providers.use(FakeProvider(prices={"NVIDIA A100-SXM4-80GB": "1.1"}))
    try:
        workload = workload_create(project=tenant.project, data=vllm_spec(execution_policy="autoscaling", execution_policy_config=CLOUD_AUTOSCALING))
        result = reconcile.run(workload.id)
    finally:
        providers.use(None)
    assert result.phase == Phase.PROVISIONING and "1 instance(s) starting" in result.message
    assert Replica.objects.get(workload=workload).worker is None


def test_sweep_marks_quiet_workers_offline_and_requeues(tenant, cpu_worker, settings):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    Worker.objects.update(last_heartbeat_at=timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S + 5))
    assert workload.id in reconcile.lagging_workloads()
    assert Worker.objects.get().state == Worker.State.OFFLINE


def test_deleting_a_worker_reschedules_its_replicas(tenant, cpu_worker):
    other = Worker.objects.create(team=tenant.team, name="spare", accepts_cpu=True, state=Worker.State.ONLINE,
                                  last_heartbeat_at=timezone.now())
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    placed_on = Replica.objects.get().worker
    worker_services.worker_delete(worker=placed_on)
    reconcile.run(workload.id)
    [replica] = Replica.objects.filter(desired=True)
    assert replica.worker is not None and replica.worker != placed_on and replica.worker in (cpu_worker, other)


def test_reconcile_task_retries_when_the_database_is_locked(monkeypatch, db):
    from django.db import OperationalError

    from workloads import reconcile, tasks

    calls = []

    def locked_once(workload_id):
        calls.append(workload_id)
        if len(calls) == 1:
            raise OperationalError("database is locked")

    monkeypatch.setattr(reconcile, "run", locked_once)
    result = tasks.reconcile_workload.apply(args=["wl_x"])
    assert result.successful() and calls == ["wl_x", "wl_x"]


def test_reconcile_task_does_not_retry_a_permanent_database_error(monkeypatch, db):
    from django.db import OperationalError

    from workloads import reconcile, tasks

    calls = []

    def broken(workload_id):
        calls.append(workload_id)
        raise OperationalError("no such table: workloads_workload")

    monkeypatch.setattr(reconcile, "run", broken)
    result = tasks.reconcile_workload.apply(args=["wl_x"])
    assert result.failed() and calls == ["wl_x"]
