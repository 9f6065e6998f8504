"""Workload secrets encrypted at rest: `HF_TOKEN=…` in a command, the env of a launch order.

A sealed JSON value is stored as `{"__sealed__": "<Fernet token>"}` in the same JSON column and
opened transparently when read through the ORM, so the API still returns `config` exactly as the
client sent it (the SDK compares it for drift, SDK_WIRE.md §4.5) and the agent still receives its
launch order in clear over its authenticated channel. What a database dump, a backup or a raw
SQL reader sees is ciphertext.

The key: `INFERENCEKEY_SECRETS_KEY` (a Fernet key; several comma-separated to rotate: the first
seals, all open), else one derived from `SECRET_KEY` with HKDF. Set `INFERENCEKEY_SECRETS_KEY` if
`SECRET_KEY` may ever change: values sealed with a key that is gone cannot be opened.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

log = logging.getLogger("inferencekey.sealing")

MARK = "__sealed__"
# A sealed object inside JSON text built by the database (Fernet tokens are URL-safe base64, so
# no escaping can hide inside; a user string containing this text would have escaped quotes).
_SEALED_IN_JSON = re.compile(r'\{"__sealed__":\s*"([A-Za-z0-9_=-]+)"\}')


@functools.lru_cache(maxsize=8)
def _fernet(secrets_key: str, secret_key: str) -> MultiFernet:
    if secrets_key:
        keys = [Fernet(k.strip().encode()) for k in secrets_key.split(",") if k.strip()]
    else:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"inferencekey-secrets-v1",
                       info=b"workload secrets at rest").derive(secret_key.encode())
        keys = [Fernet(base64.urlsafe_b64encode(derived))]
    return MultiFernet(keys)


def _box() -> MultiFernet:
    return _fernet(getattr(settings, "INFERENCEKEY_SECRETS_KEY", "") or "", settings.SECRET_KEY)


def seal(value) -> dict:
    """`{"__sealed__": token}` for any JSON value."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=False)
    return {MARK: _box().encrypt(text.encode()).decode()}


@functools.lru_cache(maxsize=4096)
def _open_token(token: str, box: MultiFernet) -> str:
    # Cached by token: the list endpoint and the heartbeats read the same rows again and again.
    # The text, not the object: every reader gets its own copy to mutate.
    return box.decrypt(token.encode()).decode()


def is_sealed(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARK), str)


def open_sealed(value):
    """The value inside a sealed object (unchanged if not sealed, or if no key opens it)."""
    if not is_sealed(value):
        return value
    try:
        return json.loads(_open_token(value[MARK], _box()))
    except (InvalidToken, ValueError):
        log.error("a sealed value cannot be opened with the current key (was SECRET_KEY or "
                  "INFERENCEKEY_SECRETS_KEY changed?)")
        return value


def open_in_json_text(text: str) -> str:
    """JSON text with every sealed object replaced by its content (for JSON built by raw SQL)."""
    if MARK not in text:
        return text

    def replace(match: re.Match) -> str:
        opened = open_sealed({MARK: match.group(1)})
        return json.dumps(opened, separators=(",", ":"))

    return _SEALED_IN_JSON.sub(replace, text)


class SealedJSONField(models.JSONField):
    """A JSONField whose value is sealed at rest: the whole value, or only `sealed_keys` of an object
    (the others stay readable to queries, e.g. the gateway's `api_base`)."""

    def __init__(self, *args, sealed_keys: tuple[str, ...] | None = None, **kwargs):
        self.sealed_keys = tuple(sealed_keys) if sealed_keys else None
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.sealed_keys:
            kwargs["sealed_keys"] = self.sealed_keys
        return name, path, args, kwargs

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or hasattr(value, "as_sql") or is_sealed(value):
            return value
        if self.sealed_keys is None:
            return seal(value)
        if isinstance(value, dict) and any(k in value for k in self.sealed_keys):
            inner = {k: value[k] for k in self.sealed_keys if k in value}
            rest = {k: v for k, v in value.items() if k not in self.sealed_keys}
            return {**rest, MARK: seal(inner)[MARK]}
        return value

    def from_db_value(self, value, expression, connection):
        value = super().from_db_value(value, expression, connection)
        if self.sealed_keys is None:
            return open_sealed(value)
        if isinstance(value, dict) and isinstance(value.get(MARK), str):
            inner = open_sealed({MARK: value[MARK]})
            if isinstance(inner, dict):
                rest = {k: v for k, v in value.items() if k != MARK}
                return {**rest, **inner}
        return value
