"""Slug canonicalisation, identical to the SDK's: lowercase, runs of anything but [a-z0-9]
become one `-`, dashes trimmed. URL-safe by construction (the SDK does not escape path segments)."""
from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG_LENGTH = 63


def canonical_slug(value: str) -> str:
    return _NON_ALNUM.sub("-", value.lower()).strip("-")


def is_canonical(value: str) -> bool:
    return bool(SLUG_RE.match(value)) and len(value) <= MAX_SLUG_LENGTH
