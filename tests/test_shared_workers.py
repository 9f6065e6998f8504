"""Shared (team-less) workers can be pinned and are listed with their ids; an agent that stops
cleanly says so and its replicas are moved at once."""
from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from workers import services as worker_services
from workers.models import Gpu, Replica, Worker
from workloads import reconcile
from workloads.services import workload_create

from .specs import vllm_spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared_worker(db):
    return Worker.objects.create(team=None, name="local", accepts_cpu=True, state=Worker.State.ONLINE,
                                 last_heartbeat_at=timezone.now(), address="127.0.0.1")


def test_shared_worker_can_be_pinned_through_the_api(api, tenant, shared_worker):
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(worker_id=shared_worker.id))
    assert response.status_code == 201, response.json()
    reconcile.run(response.json()["id"])
    assert Replica.objects.get().worker == shared_worker


def test_gpu_of_a_shared_worker_can_be_pinned(tenant, shared_worker):
    gpu = Gpu.objects.create(worker=shared_worker, index=0, name="NVIDIA L4", memory_total_mb=23034)
    workload = workload_create(project=tenant.project, data=vllm_spec(worker_id=shared_worker.id, gpu_resource_id=gpu.id))
    assert workload.gpu_resource_id == gpu.id


def test_shared_worker_cannot_be_pinned_when_sharing_is_off(api, settings, tenant, shared_worker):
    settings.ALLOW_SHARED_WORKER = False
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(worker_id=shared_worker.id))
    assert response.status_code == 400 and "no worker" in response.json()["fields"]["worker_id"][0]


def test_another_teams_worker_still_cannot_be_pinned(api, tenant, other_tenant):
    foreign = Worker.objects.create(team=other_tenant.team, name="theirs", state=Worker.State.ONLINE)
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(worker_id=foreign.id))
    assert response.status_code == 400 and response.json()["fields"]["worker_id"]


def test_workers_page_lists_shared_workers_with_their_ids(client, tenant, shared_worker):
    client.force_login(tenant.owner)
    response = client.get(reverse("workers:list", kwargs={"team": tenant.team.slug}))
    assert f'data-worker="{shared_worker.id}"'.encode() in response.content
    assert f"<code>{shared_worker.id}</code>".encode() in response.content


def _register(client, team):
    join = worker_services.join_token_create(team=team, name="box", accepts_cpu=True)
    body = client.post("/api/agent/register", {"join_token": join.value, "hostname": "h", "cpu_only": True},
                       content_type="application/json").json()
    return Worker.objects.get(pk=body["worker_id"]), body["worker_token"]


def test_clean_agent_stop_marks_the_worker_offline_and_moves_its_replicas_at_once(client, tenant, shared_worker):
    worker, token = _register(client, tenant.team)
    workload = workload_create(project=tenant.project, data=vllm_spec(worker_id=worker.id))
    reconcile.run(workload.id)
    Replica.objects.update(state=Replica.State.READY)
    workload.worker_id = None
    workload.save(update_fields=["worker_id"])  # unpinned, so it may move to the shared worker
    response = client.post("/api/agent/offline", {"engines_stopped": True}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    worker.refresh_from_db()
    assert worker.state == Worker.State.OFFLINE
    reconcile.run(workload.id)
    [replica] = Replica.objects.filter(desired=True)
    assert replica.worker == shared_worker


def test_agent_leaving_engines_running_only_marks_the_worker_offline(client, tenant):
    worker, token = _register(client, tenant.team)
    workload = workload_create(project=tenant.project, data=vllm_spec(worker_id=worker.id))
    reconcile.run(workload.id)
    Replica.objects.update(state=Replica.State.READY)
    client.post("/api/agent/offline", {"engines_stopped": False}, content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}")
    assert Worker.objects.get(pk=worker.pk).state == Worker.State.OFFLINE
    assert Replica.objects.get().state == Replica.State.READY


@pytest.mark.parametrize("auth,body,status", [
    ("Bearer nope", {"engines_stopped": True}, 401),
    (None, {"engines_stopped": "yes"}, 400),
])
def test_offline_call_checks_credential_and_body(client, tenant, auth, body, status):
    _, token = _register(client, tenant.team)
    response = client.post("/api/agent/offline", body, content_type="application/json",
                           HTTP_AUTHORIZATION=auth or f"Bearer {token}")
    assert response.status_code == status and "error" in response.json()
