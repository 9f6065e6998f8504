"""Prefixed public ids (`wl_…`, `wrk_…`): readable on the wire and unguessable.

One named function per prefix, because migrations reference field defaults by import path."""
from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 16) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_team_id() -> str:
    return new_id("ten_")


def new_project_id() -> str:
    return new_id("proj_")


def new_key_id() -> str:
    return new_id("key_")


def new_workload_id() -> str:
    return new_id("wl_")


def new_worker_id() -> str:
    return new_id("wrk_")


def new_gpu_id() -> str:
    return new_id("gpu_")


def new_replica_id() -> str:
    return new_id("rep_")
