"""Malformed input never yields a 500: every odd body gets a 4xx (or is read defensively)."""

import json

import pytest

from workers import services as ws

BODIES = [
    "[]",
    "null",
    '"x"',
    "1",
    '{"name": {}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"vllm","config":{"command":["a"]}}',
    '{"name":"a","slug":"a","model_name":"m","backend":["vllm"]}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","task_type":[1]}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":{}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":"scheduled","execution_policy_config":{"window":"Mon-Fri 08:00-20:00 ../../etc"}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":"autoscaling","execution_policy_config":{"max_workers":2,"max_hourly_cost_usd":1e999,"workers":{"source":"cloud","cloud_pool":{"gpu_pool":[[1]]}}}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":"autoscaling","execution_policy_config":{"max_workers":2,"workers":{"source":"private","private_worker_ids":[{}]}}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":"scheduled","execution_policy_config":{"cron":["x"],"timezone":[1]}}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","worker_id":5}',
    '{"name":"a\\u0000b","slug":"a","model_name":"m","backend":"ollama"}',
    '{"name":"a","slug":"a","model_name":"m","backend":"ollama","description":"\\ud800"}',
]


@pytest.mark.parametrize("body", BODIES)
def test_no_500_on_create(client, tenant, body):
    r = client.post(
        "/api/projects/demo/workloads",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}",
    )
    assert r.status_code in (201, 400), (r.status_code, r.content[:300])


@pytest.mark.parametrize("body", BODIES)
def test_no_500_on_patch(client, tenant, body):
    ok = client.post(
        "/api/projects/demo/workloads",
        data=json.dumps({"name": "x", "slug": "x", "model_name": "m", "backend": "ollama"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}",
    )
    assert ok.status_code == 201
    r = client.patch(
        "/api/workloads/x", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}"
    )
    assert r.status_code in (200, 400, 409), (r.status_code, r.content[:300])


@pytest.mark.parametrize(
    "payload",
    [
        {"join_token": "ik_join_x", "cpu_count": "abc", "labels": {"k": "v\u0000"}},
        {"join_token": 5},
        {"join_token": "a", "gpus": "x"},
    ],
)
def test_no_500_register(client, tenant, payload):
    tok = ws.join_token_create(team=tenant.team).value
    payload = {**payload, "join_token": tok if payload["join_token"] == "ik_join_x" else payload["join_token"]}
    r = client.post("/api/agent/register", data=json.dumps(payload), content_type="application/json")
    assert r.status_code in (201, 400, 401), (r.status_code, r.content[:300])


@pytest.mark.parametrize(
    "hb",
    [
        {"gpus": [{"index": 0, "memory_total_mb": "[N/A]"}]},
        {"gpus": "x"},
        {"replicas": "x"},
        {"replicas": [{"id": "rep_x", "restarts": "many"}]},
        {"gpus": [1, None]},
    ],
)
def test_no_500_heartbeat(client, tenant, hb):
    tok = ws.join_token_create(team=tenant.team).value
    wt = client.post(
        "/api/agent/register", data=json.dumps({"join_token": tok}), content_type="application/json"
    ).json()["worker_token"]
    r = client.post(
        "/api/agent/heartbeat", data=json.dumps(hb), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {wt}"
    )
    assert r.status_code in (200, 400), (r.status_code, r.content[:300])


def test_nul_and_surrogates_name_their_field(client, tenant):
    body = '{"name":"a\\u0000b","slug":"a","model_name":"m","backend":"ollama","description":"\\ud800"}'
    r = client.post(
        "/api/projects/demo/workloads",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}",
    )
    assert r.status_code == 400 and {"name", "description"} <= set(r.json()["fields"])


def _deep(opening: str, closing: str, depth: int, leaf: str = "1") -> str:
    return opening * depth + leaf + closing * depth


SPEC_HEAD = '{"name":"a","slug":"a","model_name":"m","backend":"vllm","config":'


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (SPEC_HEAD + _deep('{"a":', "}", 100_000) + "}", "non_field_errors"),  # past the parser's recursion
        (SPEC_HEAD + _deep("[", "]", 100_000, "") + "}", "non_field_errors"),
        (SPEC_HEAD + _deep('{"a":', "}", 500) + "}", "config"),  # parses, but deeper than any spec
        (SPEC_HEAD + '{"command":"vllm serve m","\\ud800":1}}', "config.\\ud800"),
        ('{"name":"a","slug":"a","model_name":"m","backend":"ollama","\\udc00x":1}', "\\udc00x"),
        ('{"name":"a","slug":"a","model_name":"m","backend":"ollama","execution_policy":"fixed",'
         '"execution_policy_config":{"a\\u0000":1}}', "execution_policy_config.a\\x00"),
    ],
)
def test_deep_json_and_bad_keys_are_400_naming_the_field(client, tenant, body, field):
    r = client.post("/api/projects/demo/workloads", data=body, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}")
    assert r.status_code == 400, r.content[:300]
    assert field in r.json()["fields"]


def test_deep_json_and_bad_keys_in_a_patch_are_400(client, tenant):
    client.post("/api/projects/demo/workloads", data=json.dumps({"name": "x", "slug": "x", "model_name": "m", "backend": "ollama"}),
                content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}")
    for body in ('{"config":' + _deep("[", "]", 100_000, "") + "}", '{"\\ud800":1}'):
        r = client.patch("/api/workloads/x", data=body, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {tenant.sdk_token}")
        assert r.status_code == 400, r.content[:300]


@pytest.mark.parametrize("labels", [_deep('{"a":', "}", 100_000), '{"\\ud800":"x"}'])
def test_agent_register_with_deep_json_or_bad_keys_is_400(client, tenant, labels):
    token = ws.join_token_create(team=tenant.team).value
    body = '{"join_token":"' + token + '","labels":' + labels + "}"
    r = client.post("/api/agent/register", data=body, content_type="application/json")
    assert r.status_code == 400 and r.json()["error"].startswith(("labels", "invalid JSON", "JSON nested"))


def test_agent_reports_with_lone_surrogates_in_values_are_stored_replaced(client, tenant):
    token = ws.join_token_create(team=tenant.team).value
    body = ('{"join_token":"' + token + '","hostname":"a\\ud800","labels":{"k":"\\udc00"},'
            '"gpus":[{"index":0,"name":"\\ud800"}]}')
    r = client.post("/api/agent/register", data=body, content_type="application/json")
    assert r.status_code == 201, r.content[:300]
    heartbeat = '{"agent_version":"\\ud800","replicas":[{"id":"rep_x","message":"\\ud800","log_tail":"\\ud800"}]}'
    r = client.post("/api/agent/heartbeat", data=heartbeat, content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {r.json()['worker_token']}")
    assert r.status_code == 200, r.content[:300]
