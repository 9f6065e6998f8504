"""Workload secrets are sealed at rest, returned as sent, and reach only the worker that runs them."""
from __future__ import annotations

import json

import pytest
from django.db import connection
from django.utils import timezone

from inferencekey_web.lib import credentials
from workers.models import Gpu, Replica, Worker
from workloads import reconcile
from workloads.models import Workload
from workloads.services import workload_create

from .specs import vllm_spec

SECRET_COMMAND = "HF_TOKEN=hf_teamsecret123 vllm serve m --max-model-len 512"


def worker_with_credential(team, name, **fields) -> tuple[Worker, str]:
    minted = credentials.mint(credentials.WORKER_PREFIX)
    worker = Worker.objects.create(team=team, name=name, state=Worker.State.ONLINE, last_heartbeat_at=timezone.now(),
                                   lookup_id=minted.lookup_id, secret_hash=minted.secret_hash, **fields)
    return worker, minted.value


def raw_column(sql: str, pk: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        value = cursor.fetchone()[0]
    return value if isinstance(value, str) else json.dumps(value)


def test_command_secret_is_sealed_in_the_database_but_returned_as_sent(api, tenant):
    config = {"command": SECRET_COMMAND}
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(config=config))
    assert created.status_code == 201 and created.json()["config"] == config
    stored = raw_column("SELECT config FROM workloads_workload WHERE id = %s", created.json()["id"])
    assert "hf_teamsecret123" not in stored and "__sealed__" in stored
    listed = api.call("GET", "/api/projects/demo/workloads", tenant.sdk_token).json()
    items = listed if isinstance(listed, list) else listed["workloads"]
    assert [w["config"] for w in items] == [config]  # the SDK sees no drift
    assert Workload.objects.get(pk=created.json()["id"]).config == config


def test_launch_order_env_is_sealed_in_the_database(tenant):
    worker, _ = worker_with_credential(None, "local", accepts_cpu=True)
    workload = workload_create(project=tenant.project, data=vllm_spec(config={"command": SECRET_COMMAND}))
    reconcile.run(workload.id)
    replica = Replica.objects.get(workload=workload)
    assert replica.launch["env"] == {"HF_TOKEN": "hf_teamsecret123"} and replica.worker == worker
    stored = raw_column("SELECT launch FROM workers_replica WHERE id = %s", replica.id)
    assert "hf_teamsecret123" not in stored and '"api_base"' in stored  # the gateway still reads api_base


def test_heartbeat_carries_only_the_replicas_placed_on_that_worker(client, tenant, other_tenant):
    shared, shared_token = worker_with_credential(None, "local", accepts_cpu=True)
    private, private_token = worker_with_credential(other_tenant.team, "globex-box")
    Gpu.objects.create(worker=private, index=0, name="NVIDIA L4", memory_total_mb=23034)
    mine = workload_create(project=tenant.project, data=vllm_spec(config={"command": "vllm serve m"}))
    theirs = workload_create(project=other_tenant.project, data=vllm_spec(
        model_name="Qwen/Qwen2-0.5B", config={"command": "HF_TOKEN=hf_globexonly vllm serve Qwen/Qwen2-0.5B"}))
    reconcile.run(mine.id)
    reconcile.run(theirs.id)
    assert Replica.objects.get(workload=theirs).worker == private

    def heartbeat(token):
        response = client.post("/api/agent/heartbeat", {"replicas": []}, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {token}")
        return response.content.decode()

    shared_view, private_view = heartbeat(shared_token), heartbeat(private_token)
    assert "hf_globexonly" not in shared_view and theirs.id not in shared_view
    assert "hf_globexonly" in private_view


@pytest.mark.parametrize("key_setting", ["", "derived"])
def test_sealed_values_open_with_the_configured_key(settings, key_setting):
    from cryptography.fernet import Fernet

    from inferencekey_web.lib import sealing

    settings.INFERENCEKEY_SECRETS_KEY = Fernet.generate_key().decode() if key_setting else ""
    sealed = sealing.seal({"command": SECRET_COMMAND})
    assert sealing.open_sealed(sealed) == {"command": SECRET_COMMAND}
    settings.INFERENCEKEY_SECRETS_KEY = Fernet.generate_key().decode()
    assert sealing.open_sealed(sealed) == sealed  # a wrong key opens nothing, and raises nothing


def test_opened_values_are_independent_copies():
    from inferencekey_web.lib import sealing

    sealed = sealing.seal({"command": SECRET_COMMAND})
    sealing.open_sealed(sealed)["command"] = "changed"
    assert sealing.open_sealed(sealed) == {"command": SECRET_COMMAND}
