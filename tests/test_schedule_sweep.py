"""Scheduled workloads at scale: the stored next transition, the sweep that reconciles only what is
due, and the batch reconcile (reconcile.run_many) that agrees with run()."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from workers.models import Replica, Worker
from workloads import policies, reconcile
from workloads.models import Phase, ReadinessEvent, Workload
from workloads.services import workload_create, workload_update

from .specs import vllm_spec

# A Wednesday, 12:00 UTC (13:00 in Madrid).
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WINDOW = {"window": "Mon-Fri 08:00-20:00 Europe/Madrid"}  # open now, closes 19:00 UTC
EVENING = {"window": "Daily 22:00-23:00 UTC"}  # closed now, opens 22:00 UTC


def _scan(policy: dict, now: datetime) -> datetime | None:
    found = policies._scan_transitions(policy, now, 1)
    return found[0][0].astimezone(UTC) if found else None


@pytest.mark.parametrize("config", [
    WINDOW, EVENING, {"window": "Fri-Mon 23:00-01:00 Asia/Kolkata"}, {"window": "Sun 02:00-03:00 Europe/Madrid"},
    {"window": "Sun 02:30-04:00 Europe/Madrid"}, {"window": "Sat 00:00-24:00 UTC"},
])
@pytest.mark.parametrize("now", [
    NOW, datetime(2026, 3, 28, 23, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 40, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 10, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC),
])
def test_next_change_of_a_window_is_the_minute_scans_first_transition(config, now):
    policy = policies.parse("scheduled", config)
    assert policies.next_change(policy, now) == _scan(policy, now)


@pytest.mark.parametrize("config", [{"cron": "0 2 * * *"}, {"cron": "*/15 * * * *", "duration_minutes": 5, "timezone": "Europe/Madrid"}])
def test_next_change_of_a_cron_is_never_after_the_first_transition(config):
    policy = policies.parse("scheduled", config)
    for now in (NOW, datetime(2026, 10, 25, 1, 10, tzinfo=UTC), datetime(2026, 3, 29, 0, 30, tzinfo=UTC)):
        assert policies.next_change(policy, now) <= _scan(policy, now)


def test_next_change_is_none_for_other_policies():
    assert policies.next_change({"kind": "fixed", "replicas": 1}, NOW) is None


@pytest.fixture
def cpu_worker(db):
    return Worker.objects.create(team=None, name="local", accepts_cpu=True, state=Worker.State.ONLINE,
                                 last_heartbeat_at=timezone.now())


def _scheduled(tenant, slug: str, config: dict) -> Workload:
    return workload_create(project=tenant.project, data=vllm_spec(slug=slug, name=slug, execution_policy="scheduled",
                                                                  execution_policy_config=config))


def _agents_report_ready() -> None:
    Replica.objects.filter(desired=True).update(state=Replica.State.READY)


def test_saving_a_scheduled_spec_stores_its_next_change(tenant):
    with time_machine.travel(NOW, tick=False):
        workload = _scheduled(tenant, "evening", EVENING)
        assert workload.next_transition_at == datetime(2026, 11, 25, 22, 0, tzinfo=UTC)
        updated = workload_update(workload=workload, patch={"execution_policy": "fixed", "execution_policy_config": {"replicas": 1}})
    assert updated.next_transition_at is None


def test_a_steady_sweep_reconciles_nothing_and_writes_nothing(tenant, cpu_worker):
    with time_machine.travel(NOW, tick=False):
        _scheduled(tenant, "open", WINDOW)
        _scheduled(tenant, "closed", EVENING)
        reconcile.run_many(reconcile.lagging_workloads())
        _agents_report_ready()
        cpu_worker.last_heartbeat_at = timezone.now()
        cpu_worker.save()
        reconcile.run_many(reconcile.lagging_workloads())
    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        Worker.objects.update(last_heartbeat_at=timezone.now())  # the agent keeps beating
        with CaptureQueriesContext(connection) as queries:
            due = reconcile.lagging_workloads()
            reconcile.run_many(due)
    writes = [q["sql"] for q in queries if q["sql"].lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    assert due == [] and writes == []


def test_the_sweep_reconciles_a_schedule_when_its_change_comes(tenant, cpu_worker):
    with time_machine.travel(NOW, tick=False):
        workload = _scheduled(tenant, "closed", EVENING)
        reconcile.run_many(reconcile.lagging_workloads())
        assert Workload.objects.get(pk=workload.pk).phase == Phase.STOPPED
    opening = Workload.objects.get(pk=workload.pk).next_transition_at
    with time_machine.travel(opening - timedelta(seconds=1), tick=False):
        assert reconcile.lagging_workloads() == []
    with time_machine.travel(opening, tick=False):
        cpu_worker.last_heartbeat_at = timezone.now()
        cpu_worker.save()
        assert reconcile.lagging_workloads() == [workload.id]
        reconcile.run_many([workload.id])
    after = Workload.objects.get(pk=workload.pk)
    assert after.phase == Phase.PROVISIONING and Replica.objects.filter(workload=workload, desired=True).count() == 1
    assert after.next_transition_at == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def test_run_many_agrees_with_run(tenant, cpu_worker):
    configs = {"open": WINDOW, "closed": EVENING, "cron": {"cron": "0 2 * * *"}}
    with time_machine.travel(NOW, tick=False):
        batch = [_scheduled(tenant, slug, config) for slug, config in configs.items()]
        single = [_scheduled(tenant, f"{slug}-1", config) for slug, config in configs.items()]
        reconcile.run_many([w.id for w in batch])
        for w in single:
            reconcile.run(w.id)
    fields = ("phase", "message", "desired_replicas", "ready_replicas", "observed_generation", "next_transition_at")
    rows = {w.slug: w for w in Workload.objects.all()}
    for slug in configs:
        assert [getattr(rows[slug], f) for f in fields] == [getattr(rows[f"{slug}-1"], f) for f in fields]
        assert list(ReadinessEvent.objects.filter(workload=rows[slug]).values_list("phase", "message")) == \
            list(ReadinessEvent.objects.filter(workload=rows[f"{slug}-1"]).values_list("phase", "message"))


def test_run_many_does_not_overwrite_a_concurrent_reconcile(tenant, cpu_worker, monkeypatch):
    with time_machine.travel(NOW, tick=False):
        workload = _scheduled(tenant, "closed", EVENING)
        real = reconcile._observe_many

        def racing(ids):  # another process reconciles right after the batch has read the rows
            Workload.objects.filter(pk=workload.pk).update(reconciled_at=timezone.now(), message="written by run()")
            return real(ids)

        monkeypatch.setattr(reconcile, "_observe_many", racing)
        counts = reconcile.run_many([workload.id])
    assert counts["written"] == 0 and Workload.objects.get(pk=workload.pk).message == "written by run()"


def test_run_many_places_a_cold_start_like_run_does_one_port_each(tenant, cpu_worker):
    with time_machine.travel(NOW, tick=False):
        batch = [_scheduled(tenant, f"open-{i}", WINDOW) for i in range(3)]
        counts = reconcile.run_many([w.id for w in batch])
    replicas = Replica.objects.filter(workload__in=batch)
    assert counts["placed"] == 3 and counts["run"] == 0
    assert sorted(replicas.values_list("port", flat=True)) == [20000, 20001, 20002]
    assert {(r.worker_id, r.state, r.launch["argv"][-1]) for r in replicas} == {
        (cpu_worker.id, Replica.State.PLACED, str(r.port)) for r in replicas}


def test_run_many_drains_a_schedule_that_closes(tenant, cpu_worker):
    with time_machine.travel(NOW, tick=False):
        workload = _scheduled(tenant, "open", WINDOW)
        reconcile.run_many([workload.id])
        _agents_report_ready()
    closing = Workload.objects.get(pk=workload.pk).next_transition_at
    assert closing == datetime(2026, 11, 25, 19, 0, tzinfo=UTC)
    with time_machine.travel(closing, tick=False):
        Worker.objects.update(last_heartbeat_at=timezone.now())
        counts = reconcile.run_many(reconcile.lagging_workloads())
    replica = Replica.objects.get(workload=workload)
    assert counts["run"] == 0 and (replica.desired, replica.state) == (False, Replica.State.DRAINING)
    assert Workload.objects.get(pk=workload.pk).phase == Phase.STOPPED


def test_the_sweep_queues_batches_not_one_task_per_workload(tenant, monkeypatch):
    from inferencekey_web.lib import tasks as queue
    from workloads import tasks

    for i in range(3):
        _scheduled(tenant, f"new-{i}", EVENING)  # never reconciled: all lag
    sent = []
    monkeypatch.setattr(queue, "send", lambda name, args, **kw: sent.append((name, args)))
    monkeypatch.setattr(reconcile, "BATCH_SIZE", 2)
    tasks.sweep()
    assert [name for name, _ in sent] == ["workloads.tasks.reconcile_batch"] * 2
    assert sorted(i for _, (ids,) in sent for i in ids) == sorted(Workload.objects.values_list("id", flat=True))
