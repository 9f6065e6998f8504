"""Pure request/response shaping: SSE filtering, model rewriting, rerank sorting, error bodies."""
from __future__ import annotations

import json

import pytest

from gateway import adapters
from gateway.adapters import RequestError, SSEFilter


def frame(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CONTENT = frame({"choices": [{"delta": {"content": "a"}}]})
USAGE = frame({"choices": [], "usage": {"total_tokens": 3}})
NO_CHOICES = frame({"id": "x", "usage": {"total_tokens": 3}})


def feed_all(pieces) -> bytes:
    sse = SSEFilter()
    return b"".join(sse.feed(p) for p in pieces) + sse.flush()


def test_usage_only_and_choiceless_frames_are_dropped():
    out = feed_all([CONTENT, USAGE, NO_CHOICES, b"data: [DONE]\n\n"])
    assert out == CONTENT + b"data: [DONE]\n\n"


def test_frames_split_anywhere_are_reassembled_and_nothing_else_changes():
    stream = CONTENT + b": comment\n\n" + USAGE + b"event: x\ndata: not json\n\n" + CONTENT + b"data: [DONE]\n\n"
    expected = CONTENT + b": comment\n\n" + b"event: x\ndata: not json\n\n" + CONTENT + b"data: [DONE]\n\n"
    for size in (1, 2, 3, 7, 50, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert feed_all(pieces) == expected, size


def test_complete_frames_go_out_immediately_and_partial_ones_wait():
    sse = SSEFilter()
    assert sse.feed(CONTENT + CONTENT[:10]) == CONTENT
    assert sse.feed(CONTENT[10:]) == CONTENT


def test_crlf_frames():
    crlf = CONTENT.replace(b"\n", b"\r\n")
    usage = USAGE.replace(b"\n", b"\r\n")
    assert feed_all([crlf + usage + crlf]) == crlf + crlf


def test_a_last_frame_without_blank_line_is_flushed():
    assert feed_all([CONTENT + b"data: [DONE]"]) == CONTENT + b"data: [DONE]"
    assert feed_all([CONTENT + USAGE.rstrip()]) == CONTENT


@pytest.mark.parametrize("model", [None, "bot", "default"])
def test_prepare_request_rewrites_the_model(model):
    raw = json.dumps({"model": model, "input": ["x"]}).encode()
    prepared = adapters.prepare_request("embeddings", raw, slug="bot", model_name="org/m")
    assert json.loads(prepared.body) == {"model": "org/m", "input": ["x"]}
    assert prepared.stream is False


def test_prepare_request_keeps_the_bytes_when_the_model_is_already_the_served_one():
    raw = b'{"model": "org/m", "messages": [], "stream": true}'
    prepared = adapters.prepare_request("chat", raw, slug="bot", model_name="org/m")
    assert prepared.body is raw and prepared.stream is True


@pytest.mark.parametrize("raw,code", [
    (b'{"model": "other"}', "model_not_available"),
    (b'{"model": 3}', "model_not_available"),
    (b"[1]", "invalid_json"),
    (b"nope", "invalid_json"),
])
def test_prepare_request_refusals(raw, code):
    with pytest.raises(RequestError) as info:
        adapters.prepare_request("chat", raw, slug="bot", model_name="org/m")
    assert info.value.status == 400 and info.value.code == code


def test_rerank_response_sorted_by_relevance_then_score_and_cut():
    raw = json.dumps({"results": [
        {"index": 0, "relevance_score": 0.2},
        {"index": 1, "score": 0.9},
        {"index": 2, "relevance_score": 0.5, "score": 0.99},
        {"index": 3},
    ]}).encode()
    body = json.loads(adapters.shape_response("rerank", raw, slug="rr", top_n=3))
    assert [r["index"] for r in body["results"]] == [1, 2, 0]
    assert body["model"] == "rr"
    body = json.loads(adapters.shape_response("rerank", raw, slug="rr", top_n=0))
    assert len(body["results"]) == 4


def test_model_is_filled_only_when_missing():
    assert json.loads(adapters.shape_response("chat", b'{"choices": []}', slug="s", top_n=None))["model"] == "s"
    raw = b'{"model": "org/m", "choices": []}'
    assert adapters.shape_response("chat", raw, slug="s", top_n=None) is raw


def test_big_embedding_responses_with_a_model_are_not_reparsed():
    raw = b'{"model":"m","data":[' + b",".join([b'{"index":0,"embedding":[0.1,0.2]}'] * 20000) + b"]}"
    assert adapters.shape_response("embeddings", raw, slug="s", top_n=None) is raw


@pytest.mark.parametrize("raw,expected", [
    (b'{"error": {"message": "too long", "type": "BadRequestError"}}', "too long"),
    (b'{"object": "error", "message": "vllm says no"}', "vllm says no"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b"<html>oops</html>", "<html>oops</html>"),
    (b"", "engine answered 500"),
])
def test_engine_errors_become_string_errors(raw, expected):
    assert json.loads(adapters.error_body(500, raw))["error"] == expected


def test_engine_error_already_in_our_shape_is_kept():
    raw = b'{"error": "bad", "code": "x"}'
    assert adapters.error_body(400, raw) is raw
