"""Every path sends the dashboard's security headers, and the production HTTPS redirect and HSTS
apply to the raw ASGI routes too (the gateway and the workload-list fast path skip Django)."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from inferencekey_web.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options")
LIST = "/api/projects/demo/workloads"
CHAT = "/endpoint/demo/bot/v1/chat/completions"


def asgi(method: str, url: str, token: str | None = None, host: str = "testserver"):
    async def go():
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application)) as http:
            return await http.request(method, url, headers={**headers, "host": host}, json={} if method == "POST" else None)

    return asyncio.run(go())


def test_static_files_send_the_security_headers(client):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert all(name in response.headers for name in HEADERS)


@pytest.mark.parametrize("method,path", [("GET", LIST), ("POST", CHAT)])
def test_raw_asgi_routes_send_the_security_headers(tenant, method, path):
    response = asgi(method, f"http://testserver{path}", tenant.sdk_token if method == "GET" else tenant.api_key)
    assert response.status_code in (200, 404)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert all(name in response.headers for name in HEADERS)
    assert "strict-transport-security" not in response.headers  # HSTS only over HTTPS


@pytest.mark.parametrize("method,path,status", [("GET", LIST, 301), ("POST", CHAT, 308)])
def test_raw_asgi_routes_redirect_plain_http_when_ssl_redirect_is_on(settings, tenant, method, path, status):
    settings.SECURE_SSL_REDIRECT = True
    response = asgi(method, f"http://testserver{path}?x=1", tenant.sdk_token)
    assert response.status_code == status
    assert response.headers["location"] == f"https://testserver{path}?x=1"


def test_ssl_redirect_refuses_a_host_outside_allowed_hosts(settings, tenant):
    settings.SECURE_SSL_REDIRECT = True
    response = asgi("GET", f"http://evil.example{LIST}", tenant.sdk_token, host="evil.example")
    assert response.status_code == 400 and "location" not in response.headers


@pytest.mark.parametrize("method,path", [("GET", LIST), ("POST", CHAT)])
def test_raw_asgi_routes_send_hsts_over_https(settings, tenant, method, path):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    response = asgi(method, f"https://testserver{path}", tenant.sdk_token if method == "GET" else tenant.api_key)
    assert response.status_code in (200, 404)
    assert response.headers["strict-transport-security"] == "max-age=3600"


def test_proxy_header_marks_the_request_secure(settings, tenant):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application)) as http:
            return await http.get(f"http://testserver{LIST}", headers={
                "authorization": f"Bearer {tenant.sdk_token}", "x-forwarded-proto": "https"})

    assert asyncio.run(go()).status_code == 200
