"""Production settings: everything from `settings`, plus the secure defaults `check --deploy` asks for.

Use with DJANGO_SETTINGS_MODULE=inferencekey_web.settings_production. A real SECRET_KEY must come
from the environment; behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER=1.
"""
from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from .lib.env import env_bool, env_int
from .settings import *  # noqa: F403
from .settings import _INSECURE_KEY

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY or SECRET_KEY == _INSECURE_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set in the environment to a random value of at least 50 characters "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )

DEBUG = env_bool("DEBUG", False)
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production settings.")

# No shared team-less worker (every team's engines would run as one OS user) unless an operator opts in.
ALLOW_SHARED_WORKER = env_bool("INFERENCEKEY_ALLOW_SHARED_WORKER", False)

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Health probes come over plain HTTP from the load balancer; do not redirect them to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

