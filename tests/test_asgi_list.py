"""The ASGI fast path for the workload list answers exactly as the Django view does."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from accounts import services
from inferencekey_web.asgi import application

from .specs import vllm_spec

pytestmark = pytest.mark.django_db(transaction=True)


def asgi_get(path: str, token: str | None):
    async def go():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as http:
            return await http.get(path, headers=headers)

    return asyncio.run(go())


def test_fast_list_equals_django_view(api, tenant):
    for i in range(3):
        api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(slug=f"w{i}"))
    django_body = api.call("GET", "/api/projects/demo/workloads", tenant.sdk_token).json()
    fast = asgi_get("/api/projects/demo/workloads", tenant.sdk_token)
    assert fast.status_code == 200 and fast.json() == django_body and len(django_body) == 3


@pytest.mark.parametrize("who", ["none", "data-key", "other-project", "read-less", "revoked"])
def test_fast_list_errors_equal_django_view(api, tenant, other_tenant, who):
    tokens = {
        "none": None,
        "data-key": tenant.api_key,
        "other-project": other_tenant.sdk_token,
        "read-less": services.sdk_token_create(project=tenant.project, scopes=["workload:write"]).value,
        "revoked": tenant.sdk_token,
    }
    if who == "revoked":
        services.credential_revoke(credential=tenant.project.sdk_tokens.get(lookup_id=tenant.sdk_token[7:15]))
    django = api.call("GET", "/api/projects/demo/workloads", tokens[who])
    fast = asgi_get("/api/projects/demo/workloads", tokens[who])
    assert (fast.status_code, fast.json()) == (django.status_code, django.json())
    assert fast.status_code in (401, 403)


def test_fast_path_leaves_other_routes_to_django(tenant):
    assert asgi_get("/api/projects/demo/workloads/", tenant.sdk_token).status_code == 404
    assert asgi_get("/healthz", None).json() == {"status": "ok"}
