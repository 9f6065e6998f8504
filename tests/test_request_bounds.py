"""Bounds on what the control plane accepts: unknown API paths, request bodies, agent reports."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api", "/api/nope", "/api/projects/demo/nothing/here", "/api/agent/unknown"])
def test_unknown_api_path_is_a_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["content-type"] == "application/json" and response.json()["error"] == "not found"


def test_unknown_dashboard_path_keeps_the_html_404(client):
    response = client.get("/no/such/page/here")
    assert response.status_code == 404 and response["content-type"].startswith("text/html")


def asgi_post(path: str, pieces, content_length: int | None = None, stall: bool = False):
    """POST through the whole ASGI application; returns (status, body, number of pieces it read)."""
    import asyncio

    from inferencekey_web.asgi import application

    async def go():
        sent, read = [], 0
        chunks = list(pieces)

        async def receive():
            nonlocal read
            if read < len(chunks):
                read += 1
                return {"type": "http.request", "body": chunks[read - 1], "more_body": stall or read < len(chunks)}
            await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": b"", "headers": headers, "scheme": "http", "server": ("testserver", 80),
                 "client": ("127.0.0.1", 5000), "asgi": {"version": "3.0"}, "http_version": "1.1"}
        await asyncio.wait_for(application(scope, receive, send), 30)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body, read

    return asyncio.run(go())


def test_oversized_content_length_is_refused_before_reading(db):
    status, body, read = asgi_post("/api/agent/register", [b"{}"], content_length=1024**3)
    assert status == 413 and read == 0
    assert "64 KiB" in json.loads(body)["error"]


def test_chunked_body_is_cut_off_at_the_route_cap(db):
    status, body, read = asgi_post("/api/agent/register", [b"x" * 16384] * 1000)
    assert status == 413 and read <= 5
    assert json.loads(body)["code"] == "body_too_large"


def test_a_stalled_body_is_answered_408(db, settings):
    settings.REQUEST_BODY_IDLE_TIMEOUT_S = 0.3
    status, body, read = asgi_post("/api/agent/register", [b'{"join_token":'], stall=True)
    assert status == 408 and read == 1 and "0.3 s" in json.loads(body)["error"]


def test_body_under_the_cap_reaches_django(db):
    status, body, _ = asgi_post("/api/unknown", [b"{}"], content_length=2)
    assert status == 404 and json.loads(body)["error"] == "not found"


def _worker_token(client, tenant):
    from workers import services as ws

    join = ws.join_token_create(team=tenant.team).value
    return client.post("/api/agent/register", data=json.dumps({"join_token": join}),
                       content_type="application/json").json()["worker_token"]


@pytest.mark.parametrize(("field", "item", "count"), [("gpus", {"index": 0}, 65), ("replicas", {"id": "rep_x"}, 257)])
def test_heartbeat_inventory_is_bounded(client, tenant, field, item, count):
    from workers.models import Gpu

    token = _worker_token(client, tenant)
    items = [{**item, "index": i} if field == "gpus" else item for i in range(count)]
    r = client.post("/api/agent/heartbeat", data=json.dumps({field: items}), content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 400 and r.json()["error"].startswith(field)
    assert Gpu.objects.count() == 0


def test_register_with_too_many_gpus_is_400_and_creates_no_worker(client, tenant):
    from workers import services as ws
    from workers.models import Worker

    join = ws.join_token_create(team=tenant.team).value
    gpus = [{"index": i, "memory_total_mb": 1} for i in range(65)]
    r = client.post("/api/agent/register", data=json.dumps({"join_token": join, "gpus": gpus}),
                    content_type="application/json")
    assert r.status_code == 400 and r.json()["error"].startswith("gpus")
    assert not Worker.objects.exists()


def test_heartbeat_with_64_gpus_is_accepted(client, tenant):
    from workers.models import Gpu

    token = _worker_token(client, tenant)
    gpus = [{"index": i, "memory_total_mb": 1} for i in range(64)]
    r = client.post("/api/agent/heartbeat", data=json.dumps({"gpus": gpus}), content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 200 and Gpu.objects.count() == 64
