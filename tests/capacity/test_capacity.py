"""Cloud capacity: instances for a cloud autoscaling workload, on a fake provider."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from workers import capacity
from workers.models import Instance, Replica, Worker
from workloads import reconcile
from workloads.services import spec_context, workload_create, workload_delete
from workloads.spec import SpecError, validate

from ..specs import vllm_spec

POOL = ["NVIDIA A10G", "NVIDIA L4"]


def cloud(min_workers=1, max_workers=4, ceiling=5.0, pool=POOL, **pool_extra):
    return {"min_workers": min_workers, "max_workers": max_workers, "max_hourly_cost_usd": ceiling,
            "workers": {"source": "cloud", "cloud_pool": {"gpu_pool": pool, **pool_extra}}}


def make(tenant, **config):
    return workload_create(project=tenant.project, data=vllm_spec(
        execution_policy="autoscaling", execution_policy_config=cloud(**config)))


def instances(workload, *states):
    rows = Instance.objects.filter(workload=workload)
    return list(rows.filter(state__in=states) if states else rows)


def test_cloud_workload_launches_the_cheapest_gpu_of_the_pool(tenant, fake):
    workload = make(tenant)
    reconcile.run(workload.id)
    [row] = instances(workload)
    assert (row.gpu_name, row.state, str(row.price_usd_per_hour)) == ("NVIDIA L4", "provisioning", "0.430")
    assert fake.launched == [row.name]


def test_reconcile_twice_launches_once(tenant, fake):
    workload = make(tenant)
    reconcile.run(workload.id)
    reconcile.run(workload.id)
    assert len(fake.launched) == 1


def test_registered_instance_runs_the_replica(tenant, fake):
    workload = make(tenant)
    reconcile.run(workload.id)
    worker = fake.register(instances(workload)[0].name)
    reconcile.run(workload.id)
    replica = Replica.objects.get(workload=workload)
    assert (worker.kind, replica.worker_id, instances(workload)[0].state) == ("cloud", worker.id, "running")


def test_cloud_worker_is_not_used_by_other_workloads(tenant, fake):
    workload = make(tenant)
    reconcile.run(workload.id)
    fake.register(instances(workload)[0].name)
    other = workload_create(project=tenant.project, data=vllm_spec(slug="other", name="Other"))
    reconcile.run(other.id)
    assert Replica.objects.get(workload=other).worker is None


def test_capacity_error_falls_back_to_the_next_gpu(tenant, fake):
    fake.no_capacity.add("NVIDIA L4")
    workload = make(tenant)
    reconcile.run(workload.id)
    reconcile.run(workload.id)
    assert [(r.gpu_name, r.state) for r in instances(workload)] == [("NVIDIA L4", "failed"), ("NVIDIA A10G", "provisioning")]


def test_instance_whose_agent_never_registers_is_replaced(tenant, fake, settings):
    settings.CLOUD_BOOT_DEADLINE_S = 600
    workload = make(tenant)
    reconcile.run(workload.id)
    first = instances(workload)[0].name
    with time_machine.travel(timezone.now() + timedelta(seconds=601)):
        capacity.sweep()  # observes instances (boot deadlines), then the reconcile replaces
        reconcile.run(workload.id)
    assert first not in fake.instances and len(fake.instances) == 1
    assert "did not register within 600 s" in Instance.objects.get(name=first).message


def test_preempted_instance_is_replaced_and_its_worker_removed(tenant, fake):
    workload = make(tenant)
    reconcile.run(workload.id)
    name = instances(workload)[0].name
    worker = fake.register(name)
    fake.preempt(name)
    capacity.sweep()
    reconcile.run(workload.id)
    assert not Worker.objects.filter(pk=worker.pk).exists()
    assert len(instances(workload, *Instance.BILLED_STATES)) == 1 and name not in fake.instances


def test_cost_ceiling_caps_the_workers_and_says_so(tenant, fake):
    workload = make(tenant, min_workers=4, ceiling=1.0)  # L4 at $0.43/h: 2 fit under $1/h
    reconcile.run(workload.id)
    workload.refresh_from_db()
    assert len(fake.launched) == 2
    assert "capped at 2 worker(s) by max_hourly_cost_usd" in workload.message


def test_pool_ceiling_is_the_smaller_one(tenant, fake):
    workload = make(tenant, min_workers=4, ceiling=5.0, max_hourly_cost_usd=0.9)
    reconcile.run(workload.id)
    workload.refresh_from_db()
    assert len(fake.launched) == 2 and "workers.cloud_pool.max_hourly_cost_usd" in workload.message


def test_delete_terminates_every_instance_and_worker(tenant, fake):
    workload = make(tenant, min_workers=2)
    reconcile.run(workload.id)
    for row in instances(workload):
        fake.register(row.name)
    names = [r.name for r in instances(workload)]
    workload_delete(workload=workload)
    capacity.terminate_named(names)  # the task queued on commit
    assert fake.instances == {}
    assert set(Instance.objects.filter(name__in=names).values_list("state", flat=True)) == {"terminated"}
    assert not Worker.objects.filter(kind="cloud").exists()


def test_sweep_terminates_machines_no_row_bills(tenant, fake):
    from workers.providers.base import MANAGED, InstanceInfo  # noqa: F401

    fake.instances["ik-leftover-1"] = {"state": "running", "labels": dict(MANAGED), "offer": None, "token": ""}
    fake.instances["someone-elses"] = {"state": "running", "labels": {}, "offer": None, "token": ""}
    counts = capacity.sweep()
    assert counts["leftovers"] == 1 and set(fake.instances) == {"someone-elses"}


def test_launch_failure_is_recorded_and_retried_later(tenant, fake):
    fake.broken = True
    workload = make(tenant, pool=["NVIDIA L4"])
    reconcile.run(workload.id)
    reconcile.run(workload.id)
    assert [r.state for r in instances(workload)] == ["failed"]
    fake.broken = False
    with time_machine.travel(timezone.now() + timedelta(seconds=capacity.FAILURE_RETRY_S + 1)):
        reconcile.run(workload.id)
    assert len(fake.launched) == 1


@pytest.mark.parametrize("config, field", [
    (cloud(ceiling=0.2, pool=["NVIDIA L4", "NVIDIA A10G"]), "execution_policy_config.max_hourly_cost_usd"),
    (cloud(ceiling=5.0, pool=["NVIDIA L4"], max_hourly_cost_usd=0.3), "execution_policy_config.workers.cloud_pool.max_hourly_cost_usd"),
])
def test_ceiling_below_the_cheapest_gpu_is_refused_naming_it(tenant, config, field):
    with pytest.raises(SpecError) as caught:
        validate(vllm_spec(execution_policy="autoscaling", execution_policy_config=config), spec_context(tenant.project))
    assert "NVIDIA L4 at $0.430/h" in caught.value.errors[field][0]


def test_ceiling_check_uses_the_cheapest_gpu_meeting_the_cuda_pin(tenant):
    # The V100 ($0.30/h) cannot run CUDA 13.0: the cheapest GPU that can is the L4.
    config = cloud(ceiling=0.35, pool=["Tesla V100-SXM2-32GB", "NVIDIA L4"], allowed_cuda_versions=["13.0"])
    with pytest.raises(SpecError) as caught:
        validate(vllm_spec(execution_policy="autoscaling", execution_policy_config=config), spec_context(tenant.project))
    assert "NVIDIA L4 at $0.430/h" in caught.value.errors["execution_policy_config.max_hourly_cost_usd"][0]


def test_hourly_cost_and_cost_to_date_follow_the_instances(tenant, fake):
    fake.no_capacity.add("NVIDIA L4")  # a refused launch costs nothing
    workload = make(tenant)
    reconcile.run(workload.id)
    reconcile.run(workload.id)
    started = timezone.now()
    assert capacity.hourly_cost_usd(workload.id) == Decimal("1.006")
    cost = capacity.cost_to_date_usd(workload.id, started + timedelta(hours=2))
    assert cost == pytest.approx(2 * 1.006, rel=0.01)


def test_sweep_removes_quiet_cloud_workers_without_an_instance(tenant, fake, settings):
    workload = make(tenant)
    reconcile.run(workload.id)
    worker = fake.register(instances(workload)[0].name)
    Instance.objects.filter(worker=worker).update(state="terminated")
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S + 1)):
        capacity.sweep()
    assert not Worker.objects.filter(pk=worker.pk).exists()


def test_sweep_keeps_cloud_workers_of_running_instances(tenant, fake, settings):
    workload = make(tenant)
    reconcile.run(workload.id)
    worker = fake.register(instances(workload)[0].name)
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S + 1)):
        capacity.sweep()
    assert Worker.objects.filter(pk=worker.pk).exists()


def test_cloud_scale_up_has_its_delay_but_wakes_from_zero_at_once(tenant, fake, settings):
    from workloads import autoscaler, autoscaling

    settings.CLOUD_SCALE_UP_DELAY_S = 30
    workload = make(tenant, min_workers=0)
    policy = autoscaling.policy_for(workload)
    at_zero = autoscaler.State(target=0, generation=workload.generation)
    waking = autoscaler.Observation(demand=1, held=1, generation=workload.generation)
    assert policy.scale_up_delay_s == 30
    assert autoscaler.decide(policy, at_zero, waking, timezone.now()).target == 1


def test_private_autoscaling_has_no_scale_up_delay(settings):
    import types

    from workloads import autoscaling

    settings.CLOUD_SCALE_UP_DELAY_S = 30
    workload = types.SimpleNamespace(backend="vllm", task_type="text2text", policy={
        "kind": "autoscaling", "source": "private", "min_workers": 0, "max_workers": 2})
    assert autoscaling.policy_for(workload).scale_up_delay_s == 0


def test_leaving_the_cloud_source_terminates_the_instances(tenant, fake, django_capture_on_commit_callbacks):
    from workloads.services import workload_update

    workload = make(tenant)
    reconcile.run(workload.id)
    with django_capture_on_commit_callbacks():
        workload_update(workload=workload, patch={"execution_policy": "fixed", "execution_policy_config": {"replicas": 1}})
    [row] = instances(workload)
    assert (row.state, row.message) == ("terminating", "the workload no longer runs on cloud capacity")


def test_unit_tests_start_no_real_agent_process(tenant, settings):
    settings.CLOUD_PROVIDER = "local"
    workload = make(tenant, pool=["NVIDIA L4"])
    reconcile.run(workload.id)
    [row] = instances(workload)
    assert row.state == "failed" and "tests start no local agent process" in row.message
