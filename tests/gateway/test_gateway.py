"""The gateway app in-process (httpx.ASGITransport) against real engine processes on free ports:
auth, project/workload scope, model acceptance, task routing, replica choice and retries."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import services
from accounts.models import DataKey
from gateway import metrics

from .conftest import STANDIN_MODEL, free_port

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/endpoint/demo/bot/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def chat_body(**extra):
    return {**HELLO, **extra}


# ----------------------------------------------------------------------------- happy paths


def test_chat_is_proxied_to_the_ready_replica(asgi_call, tenant, make_workload, standin):
    workload = make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body(model="bot"))
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "echo: hello"
    assert isinstance(body["model"], str)
    assert response.headers["x-inferencekey-replica"] == workload.test_replicas[0].id
    assert "content-encoding" not in response.headers


def test_x_api_key_header_is_accepted(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, json=chat_body(), headers={"x-api-key": tenant.api_key})
    assert response.status_code == 200


def test_project_may_be_addressed_by_its_id(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", f"/endpoint/{tenant.project.id}/bot/v1/chat/completions", tenant.api_key, chat_body())
    assert response.status_code == 200


def test_models_lists_the_workload_slug(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("GET", "/endpoint/demo/bot/v1/models", tenant.api_key)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["bot"]


def test_completions_pass_through(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", "/endpoint/demo/bot/v1/completions", tenant.api_key, {"prompt": "say this", "model": "bot"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "say this"


def test_rerank_is_sorted_best_first_and_cut_to_top_n(asgi_call, tenant, make_workload, standin):
    make_workload("rr", ports=[standin], task_type="reranker")
    docs = ["nothing here", "red apple pie", "an apple", "apple pie recipe with red apples"]
    response = asgi_call("POST", "/endpoint/demo/rr/v1/rerank", tenant.api_key,
                         {"model": "rr", "query": "red apple pie", "documents": docs, "top_n": 2})
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0]["index"] == 1 and results[0]["relevance_score"] == 1.0
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]


def test_embeddings_without_model_get_the_slug_and_rerank_falls_back_to_score(asgi_call, tenant, make_workload, fake_engine):
    make_workload("emb", ports=[fake_engine.port], task_type="embedding", model_name="org/emb")
    response = asgi_call("POST", "/endpoint/demo/emb/v1/embeddings", tenant.api_key, {"input": ["a", "b"], "model": "emb"})
    assert response.status_code == 200
    assert response.json()["model"] == "emb"
    assert [d["embedding"][0] for d in response.json()["data"]] == [0.0, 1.0]

    response = asgi_call("POST", "/endpoint/demo/emb/v1/rerank", tenant.api_key,
                         {"query": "q", "documents": ["a", "b", "c", "d"], "top_n": 3})
    assert [r["index"] for r in response.json()["results"]] == [1, 3, 2]


def test_chat_without_model_in_the_engine_answer_gets_the_slug(asgi_call, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.json()["model"] == "bot"


# ----------------------------------------------------------------------------- model field


@pytest.mark.parametrize("model", ["bot", "org/served-name", "default", None, "absent"])
def test_accepted_model_values_are_rewritten_to_the_served_model(asgi_call, tenant, make_workload, fake_engine, model):
    make_workload("bot", ports=[fake_engine.port], model_name="org/served-name")
    body = chat_body() if model == "absent" else chat_body(model=model)
    response = asgi_call("POST", CHAT, tenant.api_key, body)
    assert response.status_code == 200
    forwarded = fake_engine.requests[-1]
    assert forwarded["body"]["model"] == "org/served-name"
    assert forwarded["body"]["messages"] == HELLO["messages"]
    assert "authorization" not in forwarded["headers"]  # the data key never reaches the engine


def test_unknown_model_is_refused(asgi_call, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body(model="gpt-4o"))
    assert response.status_code == 400
    assert response.json() == {"error": "Model 'gpt-4o' is not available on this endpoint", "code": "model_not_available"}
    assert fake_engine.requests == []


def test_invalid_json_is_a_400(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, tenant.api_key, content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


# ----------------------------------------------------------------------------- auth


def test_missing_key_is_401(asgi_call, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, json=chat_body())
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_api_key"


@pytest.mark.parametrize("token", [
    "ik_live_deadbeef_" + "0" * 64,  # well-formed, unknown
    "not-a-key",
    "Bearer",
])
def test_unknown_or_malformed_key_is_401(asgi_call, make_workload, standin, token):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, token, chat_body())
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_api_key"


def test_wrong_secret_for_a_known_lookup_id_is_401(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    forged = tenant.api_key[:-4] + ("0000" if not tenant.api_key.endswith("0000") else "1111")
    response = asgi_call("POST", CHAT, forged, chat_body())
    assert response.status_code == 401


def test_revoked_key_is_401(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    services.credential_revoke(credential=DataKey.objects.get(project=tenant.project))
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_api_key"


def test_expired_key_is_401(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    key = services.data_key_create(project=tenant.project, expires_at=timezone.now() - timedelta(minutes=1))
    response = asgi_call("POST", CHAT, key.value, chat_body())
    assert response.status_code == 401


def test_sdk_token_is_403_wrong_credential_type(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, tenant.sdk_token, chat_body())
    assert response.status_code == 403
    assert response.json()["error"] == "wrong_credential_type"


def test_key_of_another_project_is_403_project_scope_mismatch(asgi_call, tenant, other_tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, other_tenant.api_key, chat_body())
    assert response.status_code == 403
    assert response.json()["error"] == "project_scope_mismatch"


def test_scoped_key_works_for_its_workload_only(asgi_call, tenant, make_workload, standin):
    mine = make_workload("bot", ports=[standin])
    make_workload("other-bot", ports=[standin])
    key = services.data_key_create(project=tenant.project, workloads=[mine])
    assert asgi_call("POST", CHAT, key.value, chat_body()).status_code == 200
    response = asgi_call("POST", "/endpoint/demo/other-bot/v1/chat/completions", key.value, chat_body())
    assert response.status_code == 403
    assert response.json()["error"] == "project_scope_mismatch"


def test_unknown_workload_is_404(asgi_call, tenant):
    response = asgi_call("POST", "/endpoint/demo/nope/v1/chat/completions", tenant.api_key, chat_body())
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


def test_unknown_route_and_wrong_method(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    assert asgi_call("POST", "/endpoint/demo/bot/v1/images/edits", tenant.api_key, {}).status_code == 404
    response = asgi_call("GET", CHAT, tenant.api_key)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


# ----------------------------------------------------------------------------- task types


@pytest.mark.parametrize("task_type,path,status", [
    ("text2text", "v1/embeddings", 400),
    ("text2text", "v1/rerank", 400),
    ("embedding", "v1/chat/completions", 400),
    ("reranker", "v1/embeddings", 400),
    ("text2image", "v1/chat/completions", 400),
    ("embedding", "v1/embeddings", 200),
    ("embedding", "v1/rerank", 200),
    ("reranker", "v1/rerank", 200),
])
def test_routes_that_do_not_fit_the_task_type_are_refused(asgi_call, tenant, make_workload, standin, task_type, path, status):
    make_workload("w", ports=[standin], task_type=task_type)
    body = {"input": ["x"], "query": "q", "documents": ["a"], **HELLO}
    response = asgi_call("POST", f"/endpoint/demo/w/{path}", tenant.api_key, body)
    assert response.status_code == status
    if status == 400:
        assert response.json()["code"] == "route_not_supported"
        assert task_type in response.json()["error"]


# ----------------------------------------------------------------------------- replicas


@pytest.mark.parametrize("state,desired", [("starting", True), ("ready", False), ("failed", True)])
def test_no_ready_replica_is_503_with_retry_after(asgi_call, tenant, make_workload, standin, state, desired):
    workload = make_workload("bot", ports=[standin], state=state, desired=desired)
    type(workload).objects.filter(pk=workload.pk).update(phase="stopped")  # not coming back: not held
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"error": "workload bot has no ready replica", "code": "no_ready_replica"}
    assert metrics.snapshot()[workload.id] == {"inflight": 0, "requests_total": 1, "errors_total": 1}


def test_dead_replica_is_retried_on_another(asgi_call, tenant, make_workload, standin):
    dead = free_port()
    workload = make_workload("bot", ports=[dead, standin])  # the dead one is older: picked first
    live_id = workload.test_replicas[1].id
    for _ in range(4):
        response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
        assert response.status_code == 200
        assert response.headers["x-inferencekey-replica"] == live_id
    assert metrics.snapshot()[workload.id] == {"inflight": 0, "requests_total": 4, "errors_total": 0}


def test_503_from_the_engine_is_retried_once_even_on_a_single_replica(asgi_call, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    fake_engine.fail_next = 1
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 200
    assert len(fake_engine.requests) == 2


def test_engine_errors_keep_their_status_with_a_string_error(asgi_call, tenant, make_workload, fake_engine):
    workload = make_workload("bot", ports=[fake_engine.port])
    fake_engine.fail_next = 2  # the retry fails too
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 503
    assert response.json() == {"error": "engine overloaded", "code": "engine_error"}
    fake_engine.fail_next, fake_engine.fail_status = 1, 400
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 400
    assert response.json()["error"] == "engine overloaded"
    assert metrics.snapshot()[workload.id]["errors_total"] == 1  # the 503 only


def test_unreachable_single_replica_is_502(asgi_call, tenant, make_workload):
    make_workload("bot", ports=[free_port()])
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 502
    assert response.json()["code"] == "engine_unreachable"


def test_least_busy_replica_is_chosen_and_ties_rotate(tenant, make_workload):
    from gateway.balancer import Balancer
    from gateway.directory import Route, make_target

    targets = tuple(make_target(f"rep_{i}", "127.0.0.1", 9000 + i, {}) for i in range(3))
    route = Route("wl_x", "bot", "m", "text2text", "vllm", targets)
    balancer = Balancer()
    assert [balancer.pick(route).replica_id for _ in range(3)] == ["rep_0", "rep_1", "rep_2"]
    metrics.replica_add("rep_0", 2)
    metrics.replica_add("rep_1", 1)
    try:
        assert balancer.pick(route).replica_id == "rep_2"
        metrics.replica_add("rep_2", 5)
        assert balancer.pick(route).replica_id == "rep_1"
        balancer.mark_unreachable("rep_1")
        assert balancer.pick(route).replica_id == "rep_0"
        assert balancer.pick(route, avoid="rep_0").replica_id == "rep_2"
    finally:
        metrics.reset()


def test_route_cache_sees_a_new_replica_after_its_ttl(gateway_app, tenant, make_workload, standin):
    import asyncio

    workload = make_workload("bot", ports=[])

    async def go():
        first = await gateway_app.routes.get((tenant.project.id, "bot"), tenant.project.id, "bot")
        assert first.targets == ()
        await asyncio.to_thread(_add_replica, workload, standin)
        cached = await gateway_app.routes.get((tenant.project.id, "bot"), tenant.project.id, "bot")
        assert cached.targets == ()  # within the TTL: no database round trip
        await asyncio.sleep(gateway_app.routes.ttl + 0.05)
        refreshed = await gateway_app.routes.get((tenant.project.id, "bot"), tenant.project.id, "bot")
        assert [t.port for t in refreshed.targets] == [standin]

    asyncio.run(go())


def _add_replica(workload, port):
    from workers.models import Replica, Worker

    worker = Worker.objects.create(team=workload.project.team, name="w2", address="127.0.0.1")
    Replica.objects.create(workload=workload, worker=worker, state="ready", port=port, launch={"api_base": "/v1"})


def test_standin_model_constant_is_what_the_engine_serves(asgi_call, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body(model=STANDIN_MODEL))
    assert response.json()["model"] == STANDIN_MODEL
