"""Credentials of the form `<prefix><8hex>_<64hex>`.

The 8-hex part is a public lookup id (shown in the UI and logs); the 64-hex part is the secret.
Only a SHA-256 of the whole value is stored: the secret has 256 bits of entropy, so a slow hash
buys nothing, and a fast one keeps authentication to one indexed lookup plus one hash.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SDK_PREFIX = "ik_sdk_"
LIVE_PREFIX = "ik_live_"
WORKER_PREFIX = "ik_wrk_"
JOIN_PREFIX = "ik_join_"

_SHAPE = re.compile(r"^(ik_[a-z]+_)([0-9a-f]{8})_([0-9a-f]{64})$")


@dataclass(frozen=True)
class Minted:
    value: str  # the full credential, shown once
    lookup_id: str
    secret_hash: str


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def mint(prefix: str) -> Minted:
    lookup_id = secrets.token_hex(4)
    value = f"{prefix}{lookup_id}_{secrets.token_hex(32)}"
    return Minted(value=value, lookup_id=lookup_id, secret_hash=hash_secret(value))


def parse(value: str) -> tuple[str, str] | None:
    """Return (prefix, lookup_id) for a well-formed credential, else None."""
    match = _SHAPE.match(value or "")
    if not match:
        return None
    return match.group(1), match.group(2)


def kind_of(value: str) -> str | None:
    """The credential family by prefix, even when malformed (for wrong-type errors)."""
    for prefix in (SDK_PREFIX, LIVE_PREFIX, WORKER_PREFIX, JOIN_PREFIX):
        if (value or "").startswith(prefix):
            return prefix
    return None


def matches(value: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(value), secret_hash)


def display(prefix: str, lookup_id: str) -> str:
    return f"{prefix}{lookup_id}…"
