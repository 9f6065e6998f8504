"""Scale from zero at the gateway: requests for a workload with no ready replica are held until one
is ready (or the hold ends), scheduled workloads outside their window are not woken, and demand is
published off the request path."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway import metrics, wake
from workers.models import Replica
from workloads.models import Workload

from .test_gateway import CHAT, chat_body

pytestmark = pytest.mark.django_db(transaction=True)


def later(seconds: float, fn) -> threading.Thread:
    """Change rows from another thread while the gateway holds a request."""
    def run():
        time.sleep(seconds)
        fn()
        from django.db import connection
        connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(wake.tasks, "send", lambda name, args, on_failure=None: sent.append((name, args)))
    return sent


def test_held_request_is_answered_once_a_replica_is_ready(asgi_call, tenant, make_workload, standin, queued):
    workload = make_workload("bot", ports=[standin], state="starting")
    Workload.objects.filter(pk=workload.pk).update(phase="bootstrapping", policy={"kind": "autoscaling", "source": "private"})
    thread = later(0.6, lambda: Replica.objects.filter(workload=workload).update(state="ready"))
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    thread.join()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello"
    assert queued == [("workloads.tasks.autoscale", [workload.id])]  # the first held request wakes it


def test_hold_ends_with_cold_start_timeout(asgi_call, gateway_app, tenant, make_workload, standin, queued):
    make_workload("bot", ports=[standin], state="starting")
    gateway_app.holder.hold_s = 0.5
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 503
    assert response.json()["error"] == "cold_start_timeout"
    assert int(response.headers["retry-after"]) > 0


def test_hold_stops_early_when_the_workload_fails(asgi_call, tenant, make_workload, standin, queued):
    workload = make_workload("bot", ports=[standin], state="starting")
    thread = later(0.4, lambda: Workload.objects.filter(pk=workload.pk).update(phase="error", message="engine exited with code 1"))
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    thread.join()
    assert response.status_code == 503
    assert response.json() == {"error": "workload_error", "detail": "engine exited with code 1"}


def test_scheduled_workload_outside_its_window_is_not_woken(asgi_call, tenant, make_workload, standin, queued):
    workload = make_workload("bot", ports=[standin], state="starting")
    now = datetime.now(UTC)
    start = (now + timedelta(hours=2)).replace(second=0, microsecond=0)
    window = {"days": list(range(7)), "start": start.hour * 60 + start.minute,
              "end": (start.hour * 60 + start.minute + 30) % 1440 or 1440, "tz": "UTC"}
    Workload.objects.filter(pk=workload.pk).update(phase="stopped", policy={"kind": "scheduled", "replicas": 1, "window": window})
    response = asgi_call("POST", CHAT, tenant.api_key, chat_body())
    assert response.status_code == 503
    assert response.json()["error"] == "outside_schedule"
    assert abs(int(response.headers["retry-after"]) - (start - now).total_seconds()) <= 61
    assert queued == []


def test_demand_publisher_sends_only_changes():
    metrics.reset()
    publisher = wake.DemandPublisher()
    metrics.request_started("wl_a")
    metrics.held_add("wl_a", 1)
    first = publisher.changes(100.0)
    assert first == {"wl_a": wake.demand.Counts(0, 1, 100.0)}
    assert publisher.changes(100.5) == {}  # nothing changed, refresh not due
    assert publisher.changes(100.0 + wake.demand.REFRESH_S) == {"wl_a": wake.demand.Counts(0, 1, 100.0)}
    metrics.held_add("wl_a", -1)
    assert publisher.changes(103.0)["wl_a"].held == 0
    metrics.reset()


def test_publisher_queues_the_autoscaler_when_one_process_alone_overloads_the_replicas():
    from gateway.directory import Route, Target

    publisher = wake.DemandPublisher()
    route = Route("wl_a", "a", "m", "text2text", "vllm", (Target("rep_1", "127.0.0.1", 1, b"/v1"),),
                  autoscaling=True, per_replica=2, max_replicas=4)
    publisher.routes["wl_a"] = route
    busy = {"wl_a": wake.demand.Counts(inflight=3)}
    assert publisher.overloaded(busy, 100.0) == ["wl_a"]
    assert publisher.overloaded(busy, 100.5) == []  # rate-limited
    assert publisher.overloaded({"wl_a": wake.demand.Counts(inflight=2)}, 200.0) == []  # within capacity


def test_a_client_that_hangs_up_while_held_stops_counting(gateway_app, tenant, make_workload, standin, queued):
    import asyncio
    import json

    workload = make_workload("bot", ports=[standin], state="starting")
    body = json.dumps(chat_body()).encode()
    sent = []

    async def go():
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(0.5)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": CHAT, "root_path": "",
                 "headers": [(b"authorization", f"Bearer {tenant.api_key}".encode()), (b"content-type", b"application/json")]}
        await asyncio.wait_for(gateway_app(scope, receive, send), 10)
        await asyncio.sleep(0)  # the cancelled hold's cleanup runs
        await gateway_app.shutdown()

    asyncio.run(go())
    assert sent == []  # nothing to answer: the client is gone
    assert metrics.demand_snapshot()[workload.id][1] == 0  # no longer held
