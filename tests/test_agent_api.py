"""Agent protocol endpoints: register with a one-time join token, heartbeat with a worker credential."""
from __future__ import annotations

import pytest

from workers import services
from workers.models import Gpu, Worker

GPU = {"index": 0, "uuid": "GPU-1", "name": "NVIDIA L4", "memory_total_mb": 23034, "memory_used_mb": 10,
       "utilization_pct": 3, "driver_version": "580.65", "cuda_version": "13.0"}


@pytest.fixture
def join(tenant):
    return services.join_token_create(team=tenant.team, name="box-1")


def register(client, token, **extra):
    return client.post("/api/agent/register", {"join_token": token, "hostname": "h", "gpus": [GPU], **extra},
                       content_type="application/json")


def test_register_trades_join_token_for_credentials(client, join, tenant):
    body = register(client, join.value).json()
    worker = Worker.objects.get(pk=body["worker_id"])
    assert body["worker_token"].startswith("ik_wrk_") and worker.team == tenant.team and worker.name == "box-1"
    assert Gpu.objects.get(worker=worker).name == "NVIDIA L4"
    assert body["worker_token"] not in (worker.secret_hash,)


def test_join_token_is_one_time(client, join):
    register(client, join.value)
    response = register(client, join.value)
    assert response.status_code == 401 and "already used" in response.json()["error"]


def test_unknown_join_token_is_refused(client, db):
    assert register(client, "ik_join_00000000_" + "0" * 64).status_code == 401


def test_heartbeat_needs_a_worker_credential(client, db):
    response = client.post("/api/agent/heartbeat", {}, content_type="application/json", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401


def test_heartbeat_updates_inventory_and_returns_desired(client, join):
    token = register(client, join.value).json()["worker_token"]
    response = client.post("/api/agent/heartbeat", {"gpus": [{**GPU, "utilization_pct": 77}], "replicas": []},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.json()["replicas"] == [] and response.json()["state"] == "online"
    assert Gpu.objects.get().utilization_pct == 77


def test_deleted_worker_gets_401(client, join):
    body = register(client, join.value).json()
    services.worker_delete(worker=Worker.objects.get(pk=body["worker_id"]))
    response = client.post("/api/agent/heartbeat", {}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {body['worker_token']}")
    assert response.status_code == 401
