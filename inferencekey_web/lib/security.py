"""Security headers and the HTTPS redirect, for Django and for the raw ASGI routes.

* `ContentSecurityPolicyMiddleware`: the CSP header (Django 5.2 has no built-in CSP).
* `SecureASGI`: what Django's SecurityMiddleware, XFrameOptionsMiddleware and the CSP middleware do
  for views, applied to the routes answered without Django (the gateway under `/endpoint/` and the
  workload-list fast path): `SECURE_SSL_REDIRECT`, HSTS, nosniff, referrer policy, frame options,
  CSP and COOP, from the same settings, so production behaves the same on every path.
"""
from __future__ import annotations

import re

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.encoding import iri_to_uri


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        if self.policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy
        return response


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _is_secure(scope) -> bool:
    # As HttpRequest.scheme: a configured proxy header wins when present, else the connection's scheme.
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, secure_value = proxy
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        value = _header(scope, name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def response_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """The headers the dashboard gets from Django's middleware, per the current settings."""
    headers = []
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        policy = policy if isinstance(policy, str) else ",".join(policy)
        headers.append((b"referrer-policy", policy.encode()))
    if getattr(settings, "SECURE_CROSS_ORIGIN_OPENER_POLICY", None):
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    if getattr(settings, "X_FRAME_OPTIONS", None):
        headers.append((b"x-frame-options", settings.X_FRAME_OPTIONS.upper().encode()))
    if getattr(settings, "CONTENT_SECURITY_POLICY", None):
        headers.append((b"content-security-policy", settings.CONTENT_SECURITY_POLICY.encode()))
    return headers


async def _send_plain(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class SecureASGI:
    """Wrap a raw ASGI app: redirect plain HTTP to HTTPS when configured, add the security headers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send, *args) -> None:
        secure = _is_secure(scope)
        extra = response_headers(secure)
        if settings.SECURE_SSL_REDIRECT and not secure:
            path = scope["path"].lstrip("/")
            if not any(re.search(pattern, path) for pattern in settings.SECURE_REDIRECT_EXEMPT):
                await self._redirect(scope, send, extra)
                return

        async def send_secured(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_secured, *args)

    async def _redirect(self, scope, send, extra) -> None:
        host = settings.SECURE_SSL_HOST or _header(scope, b"host") or ""
        domain, _ = split_domain_port(host)
        allowed = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        if not domain or not validate_host(domain, allowed):
            await _send_plain(send, 400, b"Bad Request: invalid Host header", extra)
            return
        query = scope.get("query_string") or b""
        location = f"https://{host}{iri_to_uri(scope.get('root_path', '') + scope['path'])}"
        if query:
            location += "?" + query.decode("latin-1")
        # 301 as Django's SecurityMiddleware for reads; 308 keeps the method and body of a POST.
        status = 301 if scope["method"] in ("GET", "HEAD") else 308
        await _send_plain(send, status, b"", [(b"location", location.encode("latin-1")), *extra])
