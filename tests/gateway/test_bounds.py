"""The gateway's bounds: request body caps per route, malformed bodies, an engine that never answers,
answers too large to hold, SSE frames without an end. Each is answered, never waited on or buffered
without limit."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.adapters import MAX_SSE_FRAME, SSEFilter

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/endpoint/demo/bot/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def asgi_messages(app, path: str, key: str, payload: dict) -> list[dict]:
    """Call the app in-process and keep every ASGI message it sends (to see how a body was cut)."""
    body = json.dumps(payload).encode()

    async def go():
        sent: list[dict] = []
        requests = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if requests:
                return requests.pop(0)
            await asyncio.Event().wait()  # the client stays connected

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        try:
            await asyncio.wait_for(app(scope, receive, send), 60)  # a hang guard, not a timing assert
        finally:
            await app.shutdown()
        return sent

    return asyncio.run(go())


def body_of(messages: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def largest_body_message(messages: list[dict]) -> int:
    return max(len(m.get("body", b"")) for m in messages if m["type"] == "http.response.body")


# ----------------------------------------------------------------------------- request bodies


def test_body_over_the_route_cap_is_413_naming_the_cap(gateway_app, asgi_call, tenant, make_workload, fake_engine):
    gateway_app.body_caps = {"chat": 1024}
    make_workload("bot", ports=[fake_engine.port])
    big = {"messages": [{"role": "user", "content": "x" * 2048}]}
    response = asgi_call("POST", CHAT, tenant.api_key, big)
    assert response.status_code == 413
    assert "1024 bytes" in response.json()["error"] and response.json()["code"] == "body_too_large"
    assert fake_engine.requests == []


def test_chunked_body_over_the_route_cap_is_413(gateway_app, asgi_call, tenant, make_workload, fake_engine):
    gateway_app.body_caps = {"chat": 1024}
    make_workload("bot", ports=[fake_engine.port])

    async def pieces():  # no content-length: sent chunked
        yield b'{"messages":[{"role":"user","content":"'
        for _ in range(4):
            yield b"x" * 512
        yield b'"}]}'

    response = asgi_call("POST", CHAT, tenant.api_key, content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and fake_engine.requests == []


def test_default_chat_cap_is_4_mib(asgi_call, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    big = {"messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    response = asgi_call("POST", CHAT, tenant.api_key, big)
    assert response.status_code == 413 and "4 MiB" in response.json()["error"]


def test_a_stalled_gateway_body_is_408(gateway_app, asgi_call, tenant, make_workload, fake_engine):
    gateway_app.body_idle_timeout = 0.3
    make_workload("bot", ports=[fake_engine.port])

    async def stalls():
        yield b'{"messages":'
        await asyncio.sleep(30)  # never finishes within the bound
        yield b"[]}"

    response = asgi_call("POST", CHAT, tenant.api_key, content=stalls(), headers={"content-type": "application/json"})
    assert response.status_code == 408 and response.json()["code"] == "body_timeout"
    assert fake_engine.requests == []


def test_deeply_nested_gateway_body_is_400(asgi_call, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    deep = b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = asgi_call("POST", CHAT, tenant.api_key, content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"


@pytest.mark.parametrize("body", [b'{"messages":[{"role":"user","content":"\\ud800"}]}',
                                  b'{"messages":[{"role":"user","content":"hi","\\udc00":1}]}'])
def test_lone_surrogates_in_a_gateway_body_are_forwarded_escaped(asgi_call, tenant, make_workload, fake_engine, body):
    make_workload("bot", ports=[fake_engine.port])
    response = asgi_call("POST", CHAT, tenant.api_key, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and len(fake_engine.requests) == 1


# ----------------------------------------------------------------------------- upstream bounds


def test_gateway_answers_504_when_engine_never_answers(settings, asgi_call, tenant, make_workload, fake_engine):
    settings.GATEWAY_FIRST_BYTE_TIMEOUT_S = 0.5
    settings.GATEWAY_READ_TIMEOUT_S = 30  # the idle bound between chunks is not what answers
    make_workload("bot", ports=[fake_engine.port])
    fake_engine.mode = "hang"
    started = time.monotonic()
    response = asgi_call("POST", CHAT, tenant.api_key, HELLO)
    assert response.status_code == 504 and response.json()["code"] == "engine_timeout"
    assert "did not start answering within 0.5 s" in response.json()["error"]
    assert time.monotonic() - started < 10  # hang guard
    assert len(fake_engine.requests) == 1  # not retried: the engine may be busy with it


def test_first_byte_timeout_does_not_cut_a_stream_that_pauses(settings, asgi_call, tenant, make_workload):
    from .fake_engine import FakeEngine

    settings.GATEWAY_FIRST_BYTE_TIMEOUT_S = 0.2
    engine = FakeEngine(stream_gap_s=0.3).start()
    try:
        make_workload("bot", ports=[engine.port])
        response = asgi_call("POST", CHAT, tenant.api_key, {**HELLO, "stream": True})
    finally:
        engine.stop()
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")


def test_huge_answer_is_streamed_through_in_bounded_pieces(gateway_app, tenant, make_workload, fake_engine):
    gateway_app.max_buffered_response = 256 * 1024
    make_workload("bot", ports=[fake_engine.port])
    fake_engine.mode, fake_engine.huge_bytes = "huge", 8 * 1024 * 1024
    messages = asgi_messages(gateway_app, CHAT, tenant.api_key, HELLO)
    assert messages[0]["status"] == 200
    body = body_of(messages)
    assert len(body) >= 8 * 1024 * 1024 - 2048 and json.loads(body)["model"] == "fake"
    assert largest_body_message(messages) <= 256 * 1024 + 1024 * 1024  # never the whole answer at once


def test_huge_rerank_answer_is_502_naming_the_limit(gateway_app, tenant, make_workload, fake_engine):
    gateway_app.max_buffered_response = 256 * 1024
    make_workload("rr", ports=[fake_engine.port], task_type="reranker")
    fake_engine.mode, fake_engine.huge_bytes = "huge", 4 * 1024 * 1024
    messages = asgi_messages(gateway_app, "/endpoint/demo/rr/v1/rerank", tenant.api_key, {"query": "q", "documents": ["a"]})
    assert messages[0]["status"] == 502
    error = json.loads(body_of(messages))
    assert error["code"] == "engine_response_too_large" and "GATEWAY_MAX_BUFFERED_RESPONSE_BYTES" in error["error"]


def test_giant_sse_frame_is_passed_through_in_bounded_pieces(gateway_app, tenant, make_workload, fake_engine):
    make_workload("bot", ports=[fake_engine.port])
    fake_engine.mode, fake_engine.huge_bytes = "giant_frame", 8 * 1024 * 1024
    messages = asgi_messages(gateway_app, CHAT, tenant.api_key, {**HELLO, "stream": True})
    body = body_of(messages)
    assert messages[0]["status"] == 200 and body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"y") == 8 * 1024 * 1024
    assert largest_body_message(messages) <= MAX_SSE_FRAME + 1024 * 1024


def test_sse_filter_holds_a_bounded_frame_whatever_the_stream():
    sse = SSEFilter()
    piece = b"z" * 65536
    passed = 0
    for _ in range(32 * 1024 * 1024 // len(piece)):  # 32 MiB without a frame boundary
        passed += len(sse.feed(piece))
        assert len(sse._rest) <= MAX_SSE_FRAME
    passed += len(sse.feed(b"\n\ndata: [DONE]\n\n")) + len(sse.flush())
    assert passed == 32 * 1024 * 1024 + len(b"\n\ndata: [DONE]\n\n")
