"""Throttles for the account flows: log-in failures per account and per client address, and
mails (password reset, sign-up, invitations) per address.

Counters live in the `throttle` cache alias, shared by every web process: the database cache by
default (table `ik_throttle_cache`, created by a migration), Redis when `THROTTLE_CACHE_URL` is set.
A counter is a fixed window `(count, window_end)`; read-modify-write is not atomic on the database
cache, so a burst of parallel attempts may slip a few past the limit: the bound is approximate,
never absent.

The client address is `REMOTE_ADDR`: behind a proxy, run uvicorn with `--proxy-headers` and
`--forwarded-allow-ips` so it is the real client, not the proxy.
"""
from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import caches
from django.core.exceptions import PermissionDenied


def _cache():
    return caches["throttle"]


def _key(kind: str, ident: str) -> str:
    return f"throttle:{kind}:{hashlib.sha256(ident.strip().lower().encode('utf-8', 'replace')).hexdigest()[:32]}"


def _read(kind: str, ident: str) -> tuple[int, float]:
    entry = _cache().get(_key(kind, ident))
    if not entry or entry[1] <= time.time():
        return 0, 0.0
    return entry


def _limit(kind: str) -> tuple[int, int]:
    count, window_s = settings.ACCOUNT_THROTTLES[kind]
    return int(count), int(window_s)


def hit(kind: str, ident: str) -> None:
    """Count one event of `kind` (a key of settings.ACCOUNT_THROTTLES) for `ident`."""
    if not ident:
        return
    _, window_s = _limit(kind)
    count, until = _read(kind, ident)
    now = time.time()
    if not count:
        until = now + window_s
    _cache().set(_key(kind, ident), (count + 1, until), timeout=max(1, int(until - now) + 1))


def retry_after(kind: str, ident: str) -> int:
    """Seconds until `ident` may try again (0: not throttled)."""
    if not ident:
        return 0
    limit, _ = _limit(kind)
    count, until = _read(kind, ident)
    return max(1, int(until - time.time())) if count >= limit else 0


def consume(kind: str, ident: str) -> bool:
    """Count one event and say whether it is within the limit (for mails: send or skip)."""
    if retry_after(kind, ident):
        return False
    hit(kind, ident)
    return True


def clear(kind: str, ident: str) -> None:
    _cache().delete(_key(kind, ident))


def client_address(request) -> str:
    return (getattr(request, "META", None) or {}).get("REMOTE_ADDR", "") if request is not None else ""


# --- log-in ---------------------------------------------------------------------------------


def login_retry_after(request, username: str) -> int:
    """Seconds before this account, or this client address, may try a password again."""
    return max(retry_after("login_account", username or ""), retry_after("login_client", client_address(request)))


class ThrottledModelBackend(ModelBackend):
    """Django's ModelBackend that refuses every password check (dashboard and /admin/ alike) while
    the account or the client address is throttled, before the password is even hashed."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if login_retry_after(request, username or kwargs.get(get_user_model().USERNAME_FIELD) or ""):
            raise PermissionDenied("too many failed log-ins")
        return super().authenticate(request, username=username, password=password, **kwargs)


def on_login_failed(sender, credentials, request=None, **kwargs):
    hit("login_account", credentials.get("username") or credentials.get("email") or "")
    hit("login_client", client_address(request))


def on_logged_in(sender, request, user, **kwargs):
    clear("login_account", user.get_username())
