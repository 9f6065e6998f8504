"""Shared fixtures: personas (owner, teammate, outsider), projects, and credentials."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.servers.basehttp import ThreadedWSGIServer

from accounts import services
from accounts.models import Membership, Role

# The live test server inherits socketserver's listen backlog of 5; concurrency tests open 50.
ThreadedWSGIServer.request_queue_size = 128


# The API suite runs twice: as is, and with DEBUG on, where every query goes through Django's debug
# cursor (it formats the SQL with `%` to log it, so a raw `%Y` that works without DEBUG is a 500 with it)
# and unmatched URLs get Django's technical HTML 404 unless a route answers them.
DEBUG_RERUN_MODULES = {
    "tests.test_api", "tests.test_asgi_list", "tests.test_sdk_control_plane", "tests.test_request_bounds",
    "tests.test_bad_input", "tests.test_agent_api", "tests.test_broker_down", "tests.test_readiness_streams",
}


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in DEBUG_RERUN_MODULES and "_django_debug" in metafunc.fixturenames:
        metafunc.parametrize("_django_debug", [False, True], ids=["plain", "DEBUG"], indirect=True)


@pytest.fixture(autouse=True)
def _django_debug(request, settings):
    if getattr(request, "param", False):
        settings.DEBUG = True  # CursorDebugWrapper on every connection, in every thread
    return settings.DEBUG


@pytest.fixture(autouse=True)
def _no_stray_agent_processes(request, monkeypatch):
    """The default `local` capacity provider starts real agent processes, which would outlive the
    session of a unit test that reconciles a cloud workload. Here its launches fail (recorded like a
    provider error) unless the test uses `real_local_agents` (the local provider's own tests)."""
    if "real_local_agents" in request.fixturenames:
        return
    from workers.providers import local
    from workers.providers.base import ProviderError

    def refuse(self, name, offer, join_token, spec):
        raise ProviderError("tests start no local agent process (use the real_local_agents fixture)")

    monkeypatch.setattr(local.LocalProvider, "launch", refuse)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """PBKDF2's deliberate slowness costs ~0.3 s per user; tests make hundreds."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttles(settings):
    """Log-in and mail throttles start at zero in every test (the database cache's table is not
    flushed between transactional tests); tests of the shared database cache set it back."""
    import uuid

    settings.CACHES = {**settings.CACHES, "throttle": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": f"throttle-{uuid.uuid4()}"}}


@dataclass
class Tenant:
    owner: object
    team: object
    project: object
    sdk_token: str
    api_key: str


def make_tenant(email: str = "owner@example.com", team: str = "acme", project: str = "demo") -> Tenant:
    user = get_user_model().objects.create_user(username=email, email=email, password="pw-for-tests-123")
    team_obj = services.team_create(name=team.title(), owner=user, slug=team)
    project_obj = services.project_create(team=team_obj, name=project.title(), slug=project)
    sdk = services.sdk_token_create(project=project_obj, created_by=user)
    key = services.data_key_create(project=project_obj, created_by=user)
    return Tenant(user, team_obj, project_obj, sdk.value, key.value)


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant()


@pytest.fixture
def other_tenant(db) -> Tenant:
    return make_tenant("outsider@example.com", "globex", "other")


@pytest.fixture
def teammate(tenant):
    user = get_user_model().objects.create_user(username="mate@example.com", email="mate@example.com", password="pw-for-tests-123")
    Membership.objects.create(team=tenant.team, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def api(client):
    """Django test client speaking JSON with a bearer token."""

    class Api:
        def __init__(self):
            self.client = client

        def call(self, method: str, path: str, token: str | None = None, body=None):
            headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
            kwargs = {"content_type": "application/json"} if body is not None else {}
            import json

            data = json.dumps(body) if body is not None else None
            return getattr(self.client, method.lower())(path, data=data, **kwargs, **headers)

    return Api()
