"""With the Celery broker unreachable, writes still succeed: the row is the truth, its message says
reconciliation is delayed, and the beat sweep re-queues it once the broker is back."""
from __future__ import annotations

import socket

import pytest

from inferencekey_web.celery import app as celery_app
from inferencekey_web.lib.tasks import RECONCILE_DELAYED
from workers import services as worker_services
from workers.models import Replica
from workloads import reconcile
from workloads.models import Workload

from .specs import vllm_spec


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker_down(monkeypatch):
    """Point the app's broker at a closed port (fresh connection pools, restored afterwards)."""

    def reset_pools():
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    url = f"redis://127.0.0.1:{_closed_port()}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", url)  # Celery's conf.broker_url reads the environment first
    monkeypatch.setitem(celery_app.conf, "broker_url", url)
    monkeypatch.setitem(celery_app.conf, "broker_transport_options", {})
    reset_pools()
    yield
    reset_pools()


pytestmark = pytest.mark.django_db(transaction=True)  # on_commit runs as in production, before the answer


def test_create_and_patch_answer_201_and_200_when_the_broker_is_down(api, tenant, broker_down):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec())
    assert created.status_code == 201 and created.json()["message"] == RECONCILE_DELAYED
    assert Workload.objects.get(pk=created.json()["id"]).message == RECONCILE_DELAYED

    patched = api.call("PATCH", "/api/workloads/support-bot", tenant.sdk_token, {"config": {"command": "vllm serve m2"}})
    assert patched.status_code == 200 and patched.json()["generation"] == 2
    assert patched.json()["message"] == RECONCILE_DELAYED


def test_the_sweep_picks_up_a_workload_whose_reconcile_could_not_be_queued(api, tenant, broker_down):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()
    assert created["id"] in reconcile.lagging_workloads()
    reconcile.run(created["id"])
    assert Workload.objects.get(pk=created["id"]).message != RECONCILE_DELAYED


def test_heartbeat_answers_200_when_the_broker_is_down(client, tenant, broker_down, caplog):
    join = worker_services.join_token_create(team=tenant.team, name="box")
    registered = client.post("/api/agent/register", {"join_token": join.value, "hostname": "h", "cpu_only": True},
                             content_type="application/json").json()
    token = registered["worker_token"]
    workload = Workload.objects.create(project=tenant.project, name="w", slug="w", model_name="m", backend="vllm",
                                       config={"command": "vllm serve m"})
    replica = Replica.objects.create(workload=workload, generation=1, worker_id=registered["worker_id"], port=9000)
    response = client.post("/api/agent/heartbeat", {"replicas": [{"id": replica.id, "state": "ready"}]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and "could not queue workloads.tasks.reconcile_workload" in caplog.text
