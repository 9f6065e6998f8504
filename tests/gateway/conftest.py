"""Fixtures for the data-plane tests: engines on free ports, DB rows, a live gateway server.

* `standin`: the stand-in engine (tests/standin_engine/server.py) as a process, one per session.
* `fake_engine`: a scriptable engine in a thread (see fake_engine.py), one per test.
* `make_workload`: a Workload with ready replicas pointing at given ports.
* `live_gateway`: `inferencekey_web.asgi:application` under a real uvicorn, in a thread of this
  process (so it sees the test database), on a free port.
* `asgi_call`: one request to a fresh `GatewayApp` in-process (httpx.ASGITransport).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from .fake_engine import FakeEngine

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin_engine" / "server.py"
STANDIN_MODEL = "org/standin-model"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """make_tenant() creates users; the default PBKDF2 costs ~0.5 s per test here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port} after {timeout}s")


@pytest.fixture(scope="session")
def standin():
    """A stand-in engine process serving STANDIN_MODEL; yields its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_")}
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "serve", STANDIN_MODEL, "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def fake_engine():
    engine = FakeEngine().start()
    yield engine
    engine.stop()


@pytest.fixture
def make_workload(tenant):
    """make_workload(slug, ports=[...], task_type=..., model_name=..., state=..., project=...)"""
    from workers.models import Replica, Worker
    from workloads.models import Workload

    worker_cache = {}

    def factory(slug: str = "bot", *, ports=(), task_type: str = "text2text", model_name: str = STANDIN_MODEL,
                state: str = "ready", desired: bool = True, project=None, api_base: str = "/v1"):
        project = project or tenant.project
        workload = Workload.objects.create(project=project, name=slug.title(), slug=slug, model_name=model_name,
                                           backend="vllm", task_type=task_type)
        worker = worker_cache.get(project.team_id)
        if worker is None:
            worker = worker_cache[project.team_id] = Worker.objects.create(
                team=project.team, name=f"w-{project.team.slug}", address="127.0.0.1", state="online")
        replicas = [
            Replica.objects.create(workload=workload, worker=worker, state=state, desired=desired, port=port,
                                   launch={"api_base": api_base})
            for port in ports
        ]
        workload.test_replicas = replicas
        return workload

    return factory


class LiveGateway:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def live_gateway():
    """The full ASGI application under uvicorn, in a thread, on a free port."""
    import uvicorn
    from django.conf import settings

    from gateway import metrics
    from inferencekey_web import asgi

    asgi.gateway_application.keys.invalidate()
    asgi.gateway_application.routes.invalidate()
    metrics.reset()
    port = free_port()
    config = uvicorn.Config(asgi.application, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            timeout_keep_alive=settings.KEEPALIVE_S)  # as `manage.py up` runs it
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited during startup"
        time.sleep(0.02)
    yield LiveGateway(port)
    server.should_exit = True
    thread.join(10)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def gateway_app():
    from gateway import metrics
    from gateway.app import GatewayApp

    metrics.reset()
    return GatewayApp()


@pytest.fixture
def asgi_call(gateway_app):
    """asgi_call(method, path, key=None, json=None, headers=None) -> httpx.Response (in-process)."""

    def call(method: str, path: str, key: str | None = None, json=None, headers=None, content=None):
        async def go():
            hdrs = dict(headers or {})
            if key is not None:
                hdrs.setdefault("authorization", f"Bearer {key}")
            transport = httpx.ASGITransport(app=gateway_app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                    return await client.request(method, path, json=json, headers=hdrs, content=content)
            finally:
                await gateway_app.shutdown()

        return run(go())

    return call
