"""The official SDK's DataClient, unchanged, against `inferencekey_web.asgi:application` under a
live uvicorn server, with the stand-in engine (or the scriptable fake) behind it."""
from __future__ import annotations

import json
import socket
import time

import pytest
from inferencekey import ApiError, DataClient, PermissionDenied, ValidationError

from accounts import services
from gateway import metrics

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_gateway, tenant):
    return DataClient(base_url=live_gateway.url, project=tenant.project.slug)


def test_generate_text(client, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    result = client.endpoint("bot", api_key=tenant.api_key).generate_text(prompt="Hola", max_tokens=5, temperature=0.2)
    assert result.text == "echo: Hola"
    assert result.finish_reason == "stop"
    assert isinstance(result.model, str) and result.model


def test_generate_text_stream_yields_chunks_without_the_usage_chunk(client, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    chunks = list(client.endpoint("bot", api_key=tenant.api_key).generate_text_stream(prompt="hi"))
    # role frame, "Hel" (split across writes), "lo", " world" (same write), finish; the usage-only
    # frame would have raised ApiError("workload drifted from spec: choices[0]") in the SDK.
    assert [c.text for c in chunks] == ["", "Hel", "lo", " world", ""]
    assert chunks[-1].finish_reason == "stop"


def test_generate_text_stream_with_the_standin_engine(client, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    chunks = list(client.endpoint("bot", api_key=tenant.api_key).generate_text_stream(prompt="hello there"))
    assert "".join(c.text for c in chunks) == "echo: hello there"


def test_embed(client, tenant, make_workload, standin):
    make_workload("emb", ports=[standin], task_type="embedding")
    result = client.endpoint("emb", api_key=tenant.api_key).embed(input=["a", "b", "c"])
    assert len(result.embeddings) == 3
    assert all(len(v) == 8 for v in result.embeddings)
    assert result.embeddings[0] != result.embeddings[1]


def test_rerank_sorted_with_top_n(client, tenant, make_workload, standin):
    make_workload("rr", ports=[standin], task_type="reranker")
    docs = ["unrelated text", "apple", "red apple pie", "pie"]
    ep = client.endpoint("rr", api_key=tenant.api_key)
    full = ep.rerank(query="red apple pie", documents=docs)
    scores = [r.relevance_score for r in full.results]
    assert scores == sorted(scores, reverse=True)
    assert full.results[0].index == 2
    top = ep.rerank(query="red apple pie", documents=docs, top_n=2)
    assert [r.index for r in top.results] == [r.index for r in full.results[:2]]


def test_sdk_sees_the_auth_errors(client, tenant, other_tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    with pytest.raises(PermissionDenied, match=r"^authentication failed: invalid_api_key$"):
        client.endpoint("bot", api_key="ik_live_00000000_" + "0" * 64).generate_text(prompt="x")
    with pytest.raises(PermissionDenied, match=r"permission denied \[wrong_credential_type\]"):
        client.endpoint("bot", api_key=tenant.sdk_token).generate_text(prompt="x")
    with pytest.raises(PermissionDenied, match=r"permission denied \[project_scope_mismatch\]"):
        client.endpoint("bot", api_key=other_tenant.api_key).generate_text(prompt="x")
    with pytest.raises(ApiError, match="not found"):
        client.endpoint("nope", api_key=tenant.api_key).generate_text(prompt="x")


def test_sdk_scoped_key(client, tenant, make_workload, standin):
    mine = make_workload("bot", ports=[standin])
    make_workload("emb", ports=[standin], task_type="embedding")
    key = services.data_key_create(project=tenant.project, workloads=[mine]).value
    assert client.endpoint("bot", api_key=key).generate_text(prompt="x").text == "echo: x"
    with pytest.raises(PermissionDenied, match=r"\[project_scope_mismatch\]"):
        client.endpoint("emb", api_key=key).embed(input="x")


def test_sdk_sees_no_ready_replica_and_task_mismatch(client, tenant, make_workload, standin):
    bot = make_workload("bot", ports=[standin], state="starting")
    type(bot).objects.filter(pk=bot.pk).update(phase="stopped")  # not coming back: answered at once
    make_workload("emb", ports=[standin], task_type="embedding")
    with pytest.raises(ApiError, match=r"api error \(status 503\): workload bot has no ready replica"):
        client.endpoint("bot", api_key=tenant.api_key).generate_text(prompt="x")
    with pytest.raises(ValidationError, match=r"bad request: workload emb is a embedding workload"):
        client.endpoint("emb", api_key=tenant.api_key).generate_text(prompt="x")


def _raw_stream(port: int, path: str, key: str, body: dict):
    """POST over a plain socket; yields (monotonic time, bytes) per recv until the body ends."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode() + payload
    )
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            yield time.monotonic(), data
    finally:
        sock.close()


def test_stream_is_passed_through_as_it_arrives(live_gateway, tenant, make_workload, fake_engine):
    fake_engine.stream_gap_s = 0.3
    workload = make_workload("bot", ports=[fake_engine.port])
    received = []
    for at, data in _raw_stream(live_gateway.port, "/endpoint/demo/bot/v1/chat/completions", tenant.api_key,
                                {"messages": [{"role": "user", "content": "hi"}], "stream": True}):
        received.append((at, data))
        if len(received) == 2:
            # mid-stream: the engine is still producing, and the request is counted in flight
            assert metrics.snapshot()[workload.id]["inflight"] == 1
    body = b"".join(d for _, d in received)
    assert body.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in body.split(b"\r\n\r\n", 1)[0].lower()
    assert b'"usage"' not in body and b"[DONE]" in body
    # The first content frame reached us long before the engine wrote its last frame.
    first_content = next(at for at, d in received if b"Hel" in d)
    assert first_content < fake_engine.sent_at[-1] - 0.5
    assert len(received) >= 4  # several separate deliveries, not one buffered blob
    deadline = time.monotonic() + 2
    while metrics.snapshot()[workload.id]["inflight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert metrics.snapshot()[workload.id] == {"inflight": 0, "requests_total": 1, "errors_total": 0}


def _stream_frames(port, key, body):
    raw = b"".join(d for _, d in _raw_stream(port, "/endpoint/demo/bot/v1/chat/completions", key, body))
    # the engine's stream is chunked; the gateway re-chunks it: read the JSON `data:` lines
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def test_stream_with_include_usage_ends_with_the_usage_chunk(live_gateway, tenant, make_workload, standin):
    make_workload("bot", ports=[standin])
    body = {"messages": [{"role": "user", "content": "count me"}], "stream": True,
            "stream_options": {"include_usage": True}}
    frames = _stream_frames(live_gateway.port, tenant.api_key, body)
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["completion_tokens"] == 3
    assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames[:-1]) == "echo: count me"


def test_stream_without_include_usage_still_drops_usage_only_chunks(live_gateway, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    frames = _stream_frames(live_gateway.port, tenant.api_key, {"messages": [{"role": "user", "content": "hi"}],
                                                                "stream": True})
    assert frames and all(f["choices"] for f in frames)


def test_client_disconnect_mid_stream_closes_the_engine_connection(live_gateway, tenant, make_workload, fake_engine):
    fake_engine.stream_gap_s = 0.3
    workload = make_workload("bot", ports=[fake_engine.port])
    stream = _raw_stream(live_gateway.port, "/endpoint/demo/bot/v1/chat/completions", tenant.api_key,
                         {"messages": [{"role": "user", "content": "hi"}], "stream": True})
    next(stream)
    stream.close()  # hang up after the first delivery
    deadline = time.monotonic() + 3
    while metrics.snapshot()[workload.id]["inflight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metrics.snapshot()[workload.id]["inflight"] == 0
    assert len(fake_engine.sent_at) < 7  # the engine did not get to write the whole stream


def test_asgi_router_sends_everything_else_to_django(live_gateway):
    import httpx

    response = httpx.get(f"{live_gateway.url}/healthz", timeout=10)
    assert response.status_code == 200
    response = httpx.get(f"{live_gateway.url}/endpoint/demo", timeout=10)  # malformed data-plane path
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)
