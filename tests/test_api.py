"""Management API over plain HTTP: shapes, errors, PATCH semantics, concurrency, secrets."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from accounts.models import DataKey, SdkToken
from workloads.models import Workload

from .specs import BAD_SPECS, CLOUD_AUTOSCALING, vllm_spec

REQUIRED = {"id": str, "project_id": str, "name": str, "slug": str, "model_name": str, "backend": str,
            "task_type": str, "created_at": str, "updated_at": str}


def test_create_returns_full_object(api, tenant):
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec())
    body = response.json()
    assert response.status_code == 201
    assert all(isinstance(body[k], t) for k, t in REQUIRED.items())
    assert body["id"].startswith("wl_") and body["project_id"].startswith("proj_")


def test_list_is_a_plain_array_of_all_workloads(api, tenant):
    for i in range(3):
        api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(slug=f"w{i}"))
    body = api.call("GET", "/api/projects/demo/workloads", tenant.sdk_token).json()
    assert isinstance(body, list) and [w["slug"] for w in body] == ["w0", "w1", "w2"]


@pytest.mark.parametrize("case,spec,field", BAD_SPECS, ids=[c for c, _, _ in BAD_SPECS])
def test_bad_spec_is_400_naming_field(api, tenant, case, spec, field):
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, spec)
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert Workload.objects.count() == 0


def test_error_string_names_the_field(api, tenant):
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(config=None))
    assert response.json()["error"].startswith("config.command: ")


def test_malformed_json_is_400(client, tenant):
    response = client.post("/api/projects/demo/workloads", data="{nope", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}")
    assert response.status_code == 400 and "invalid JSON" in response.json()["error"]


def test_duplicate_slug_is_409(api, tenant):
    api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec())
    response = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(name="Other"))
    assert response.status_code == 409 and "already exists" in response.json()["error"]


def test_patch_replaces_config_whole_and_bumps_generation(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token,
                       vllm_spec(config={"command": "vllm serve m", "vllm_version": "0.6.3"})).json()
    response = api.call("PATCH", f"/api/workloads/{created['id']}", tenant.sdk_token, {"config": {"command": "vllm serve m2"}})
    assert response.json()["config"] == {"command": "vllm serve m2"}
    assert response.json()["generation"] == 2


def test_patch_revalidates_merged_spec(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()
    response = api.call("PATCH", f"/api/workloads/{created['id']}", tenant.sdk_token, {"backend": "ollama"})
    assert response.status_code == 400 and "config.command" in response.json()["fields"]
    assert Workload.objects.get(pk=created["id"]).backend == "vllm"


def test_patch_policy_change_needs_its_config(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()
    response = api.call("PATCH", f"/api/workloads/{created['id']}", tenant.sdk_token, {"execution_policy": "autoscaling"})
    assert response.status_code == 400
    assert "execution_policy_config.max_hourly_cost_usd" in response.json()["fields"]


def test_noop_patch_keeps_updated_at(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()
    again = api.call("PATCH", f"/api/workloads/{created['id']}", tenant.sdk_token, {"name": "Support Bot"}).json()
    assert (again["updated_at"], again["generation"]) == (created["updated_at"], 1)


def test_get_by_slug_and_delete_by_id(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec()).json()
    assert api.call("GET", "/api/workloads/support-bot", tenant.sdk_token).json()["id"] == created["id"]
    assert api.call("DELETE", f"/api/workloads/{created['id']}", tenant.sdk_token).status_code == 204
    assert api.call("DELETE", f"/api/workloads/{created['id']}", tenant.sdk_token).status_code == 404


def test_other_projects_workload_is_404(api, tenant, other_tenant):
    created = api.call("POST", "/api/projects/other/workloads", other_tenant.sdk_token, vllm_spec()).json()
    assert api.call("GET", f"/api/workloads/{created['id']}", tenant.sdk_token).status_code == 404
    assert api.call("DELETE", f"/api/workloads/{created['id']}", tenant.sdk_token).status_code == 404


@pytest.mark.parametrize("header,status,error", [
    (None, 401, "invalid_token"),
    ("Bearer ", 401, "invalid_token"),
    ("Bearer ik_sdk_deadbeef_" + "0" * 64, 401, "invalid_token"),
    ("Basic abc", 401, "invalid_token"),
])
def test_auth_failures(client, tenant, header, status, error):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/api/projects/demo/workloads", **extra)
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_data_key_is_wrong_credential_type(api, tenant):
    response = api.call("GET", "/api/projects/demo/workloads", tenant.api_key)
    assert (response.status_code, response.json()["error"]) == (403, "wrong_credential_type")


def test_assignment_needs_assignment_scope(api, tenant):
    from accounts import services

    token = services.sdk_token_create(project=tenant.project, scopes=["workload:read", "workload:write"]).value
    response = api.call("POST", "/api/projects/demo/workloads", token, vllm_spec(worker_id="wrk_x"))
    assert (response.status_code, response.json()["error"]) == (403, "scope_insufficient")


def test_expired_token_is_401(api, tenant):
    from datetime import timedelta

    from django.utils import timezone

    SdkToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api.call("GET", "/api/projects/demo/workloads", tenant.sdk_token).status_code == 401


def test_routes_have_no_trailing_slash_and_no_compression(client, tenant):
    response = client.get("/api/projects/demo/workloads", HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}",
                          HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200 and "Content-Encoding" not in response
    assert client.get("/api/projects/demo/workloads/", HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}").status_code == 404


def test_no_plaintext_secret_in_the_database(tenant):
    from django.db import connection

    with connection.cursor() as cursor:
        dump = []
        for model in (SdkToken, DataKey):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")
            dump.extend(json.dumps(row, default=str) for row in cursor.fetchall())
    text = "\n".join(dump)
    assert tenant.sdk_token not in text and tenant.api_key not in text
    assert tenant.sdk_token.split("_")[-1] not in text and tenant.api_key.split("_")[-1] not in text
    assert SdkToken.objects.get().lookup_id in text  # the public part is what is kept


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database(client):
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_openapi_schema_lists_the_routes(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/projects/{project}/workloads" in schema and "/api/workloads/{workload}" in schema
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_creates_make_one_workload(live_server, tenant):
    barrier = threading.Barrier(50)

    def create(i: int) -> int:
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            barrier.wait()
            r = http.post("/api/projects/demo/workloads", json=vllm_spec(name=f"bot {i}"),
                          headers={"Authorization": f"Bearer {tenant.sdk_token}"})
            return r.status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(create, range(50)))
    assert Workload.objects.filter(slug="support-bot").count() == 1
    assert statuses.count(201) == 1 and all(s in (201, 409) for s in statuses), statuses


def test_list_matches_the_single_object_shape(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token,
                       vllm_spec(config={"command": "vllm serve m", "vllm_version": "0.6.3"},
                                 execution_policy="autoscaling", execution_policy_config=CLOUD_AUTOSCALING)).json()
    [listed] = api.call("GET", "/api/projects/demo/workloads", tenant.sdk_token).json()
    assert listed["config"] == created["config"] and listed["execution_policy_config"] == CLOUD_AUTOSCALING
    assert isinstance(listed["execution_policy_config"]["max_hourly_cost_usd"], float)  # 5.0 stays 5.0
    keys = set(listed) - {"created_at", "updated_at"}
    assert keys >= {"id", "project_id", "project_slug", "config", "execution_policy_config", "generation"}
    assert {k: listed[k] for k in keys} == {k: created[k] for k in keys}
    assert listed["created_at"][:19] == created["created_at"][:19] and listed["created_at"].endswith("Z")
