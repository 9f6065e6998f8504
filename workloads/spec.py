"""The one validator of a workload spec.

`validate(data, ctx)` turns a wire dict (what the SDK sends, or a form's cleaned data) into a
frozen, normalised `WorkloadSpec`, or raises one `SpecError` whose `errors` maps a field path
(`execution_policy_config.workers.cloud_pool.gpu_pool[1]`) to messages. The API serializer, the
dashboard form, the admin and the reconciler all call it, so they cannot disagree.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferencekey_web.lib.json_input import safe_key
from inferencekey_web.lib.slugs import MAX_SLUG_LENGTH, canonical_slug
from workers import engines

from . import policies

BUILTIN_BACKENDS = ("ollama", "vllm", "vllm-omni", "sglang", "llamacpp")
COMMAND_BACKENDS = ("vllm", "vllm-omni", "llamacpp")
VLLM_BACKENDS = ("vllm", "vllm-omni")
TASK_TYPES = (
    "text2text", "embedding", "text2image", "text2video", "text2audio", "image2image", "image2video",
    "audio2text", "omni", "reranker", "classification", "reward", "forecast",
)
# Credentials (ik_live_, ik_sdk_, worker and join tokens) anywhere in a string, not only at a token's start: `HF_TOKEN=ik_live_…`, `--api-key=ik_sdk_…`.
_SECRET = re.compile(r"(?<![A-Za-z0-9])ik_(?:live|sdk|wrk|join)_")
WIRE_FIELDS = (
    "name", "slug", "description", "model_name", "backend", "task_type", "config",
    "execution_policy", "execution_policy_config", "worker_id", "gpu_resource_id",
)
# Output-only keys a client may echo back in a PATCH; ignored rather than rejected.
READ_ONLY_FIELDS = {"id", "project_id", "project_slug", "workload_slug", "created_at", "updated_at",
                    "generation", "observed_generation", "phase", "status", "message", "endpoint_url"}
MAX_COMMAND_LENGTH = 16 * 1024
_VERSION = re.compile(r"^v?\d+(\.\d+){0,3}([.+-]?[0-9A-Za-z.]+)?$")


class SpecError(Exception):
    """All problems with a spec, keyed by field path."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


@dataclass
class SpecContext:
    """Where the validator looks things up. Defaults accept everything (pure unit tests)."""

    gpu_catalog: Callable[[], dict[str, list[str]]] = lambda: {}
    gpu_prices: Callable[[], dict[str, object]] = lambda: {}  # display name → cheapest $/h (cost ceilings)
    suggest: Callable[[str, list[str]], list[str]] = lambda name, names: []
    worker_exists: Callable[[str], bool] = lambda worker_id: True
    gpu_on_worker: Callable[[str, str | None], bool | None] = lambda gpu_id, worker_id: True
    custom_backends: Callable[[], dict[str, str]] = lambda: {}  # slug → declared task_type


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    slug: str
    model_name: str
    backend: str
    task_type: str
    description: str | None = None
    config: Any = None
    execution_policy: str | None = None
    execution_policy_config: Any = None
    worker_id: str | None = None
    gpu_resource_id: str | None = None
    policy: dict = field(default_factory=dict)

    def wire(self) -> dict:
        """The stored wire fields, exactly as the client sent them."""
        return {name: getattr(self, name) for name in WIRE_FIELDS}

    @property
    def command(self) -> str | None:
        return (self.config or {}).get("command")

    @property
    def vllm_version(self) -> str | None:
        return (self.config or {}).get("vllm_version")


def _bad_text(value: str) -> str | None:
    """Why a string cannot be stored (PostgreSQL refuses NUL; lone surrogates are not UTF-8)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def _find_secrets(value: Any, path: str, out: dict[str, list[str]]) -> None:
    """Walk every string of the spec: no credentials, nothing the database cannot store."""
    if isinstance(value, str):
        problem = _bad_text(value)
        if problem:
            out.setdefault(path, []).append(problem)
            return
        if _SECRET.search(value):
            out.setdefault(path, []).append("secrets must never go in specs (looks like an ik_live_/ik_sdk_ credential)")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = safe_key(key) if isinstance(key, str) else str(key)  # error paths must be encodable
            child = f"{path}.{name}" if path else name
            if isinstance(key, str) and _bad_text(key):
                out.setdefault(child, []).append(f"key {_bad_text(key)}")
            _find_secrets(item, child, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_secrets(item, f"{path}[{i}]", out)


def validate(data: Any, ctx: SpecContext | None = None) -> WorkloadSpec:
    """Validate a whole spec (create, or a PATCH merged onto the stored spec)."""
    ctx = ctx or SpecContext()
    errors: dict[str, list[str]] = {}

    def add(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    if not isinstance(data, dict):
        raise SpecError({"non_field_errors": ["the request body must be a JSON object"]})

    for key in data:
        if key in WIRE_FIELDS or key in READ_ONLY_FIELDS:
            continue
        if key == "model":
            add("model", "use 'model_name' for the model on the wire")
        elif key == "project":
            add("project", "the project goes in the URL, not in the body")
        else:
            add(safe_key(key) if isinstance(key, str) else str(key), "unknown field")

    def text(key: str, *, required: bool, max_length: int) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                add(key, "is required")
            return None
        if not isinstance(value, str):
            add(key, "must be a string")
            return None
        if required and not value.strip():
            add(key, "must not be empty")
            return None
        if len(value) > max_length:
            add(key, f"must be at most {max_length} characters")
        return value

    name = text("name", required=True, max_length=120)
    raw_slug = text("slug", required=True, max_length=200)
    slug = None
    if raw_slug is not None:
        slug = canonical_slug(raw_slug)
        if not slug:
            add("slug", "must contain at least one letter or digit")
        elif len(slug) > MAX_SLUG_LENGTH:
            add("slug", f"must be at most {MAX_SLUG_LENGTH} characters")
    model_name = text("model_name", required=True, max_length=255)
    description = text("description", required=False, max_length=2000)

    custom = ctx.custom_backends()
    backend = text("backend", required=True, max_length=63)
    if backend is not None and backend not in BUILTIN_BACKENDS and backend not in custom:
        add("backend", f"unknown backend {backend!r}; expected one of {', '.join(BUILTIN_BACKENDS + tuple(custom))}")
        backend = None

    task_type = data.get("task_type") or "text2text"
    if task_type not in TASK_TYPES:
        add("task_type", f"must be one of {', '.join(TASK_TYPES)}")
    elif backend in custom and custom[backend] and custom[backend] != task_type:
        add("task_type", f"custom backend {backend!r} serves {custom[backend]!r}, not {task_type!r}")

    config = data.get("config")
    _validate_config(config, backend, add)

    policy_kind = data.get("execution_policy")
    policy_config = data.get("execution_policy_config")
    policy: dict = {}
    if policy_kind is None:
        if policy_config is not None:
            add("execution_policy", "is required when execution_policy_config is given")
        else:
            policy = {"kind": "fixed", "replicas": 1}  # the server default
    elif policy_kind not in policies.POLICIES:
        add("execution_policy", f"must be one of {', '.join(policies.POLICIES)}")
    else:
        try:
            policy = policies.parse(
                policy_kind,
                policy_config,
                policies.PolicyContext(gpu_catalog=ctx.gpu_catalog, gpu_prices=ctx.gpu_prices, worker_exists=ctx.worker_exists, suggest=ctx.suggest),
            )
        except policies.PolicyErrors as exc:
            for path, messages in exc.errors.items():
                for message in messages:
                    add(path, message)

    worker_id = text("worker_id", required=False, max_length=32)
    if worker_id is not None:
        if not worker_id.startswith("wrk_"):
            add("worker_id", "must be a worker id starting with 'wrk_'")
        elif not ctx.worker_exists(worker_id):
            add("worker_id", f"no worker {worker_id!r} in this team or shared")
    gpu_id = text("gpu_resource_id", required=False, max_length=32)
    if gpu_id is not None:
        if not gpu_id.startswith("gpu_"):
            add("gpu_resource_id", "must be a GPU id starting with 'gpu_' (see GPU Resources)")
        else:
            on_worker = ctx.gpu_on_worker(gpu_id, worker_id)
            if on_worker is None:
                add("gpu_resource_id", f"no GPU {gpu_id!r} in this team or shared")
            elif not on_worker:
                add("gpu_resource_id", f"GPU {gpu_id!r} is not on worker {worker_id!r}")

    _find_secrets({k: data.get(k) for k in WIRE_FIELDS if k in data}, "", errors)
    if errors:
        raise SpecError(errors)
    return WorkloadSpec(
        name=name, slug=slug, model_name=model_name, backend=backend, task_type=task_type,
        description=description, config=config, execution_policy=policy_kind,
        execution_policy_config=policy_config, worker_id=worker_id, gpu_resource_id=gpu_id, policy=policy,
    )


def _validate_config(config: Any, backend: str | None, add) -> None:
    if config is None:
        if backend in COMMAND_BACKENDS:
            add("config.command", f"is required for the {backend} backend (the command that launches the server)")
        return
    if not isinstance(config, dict):
        add("config", "must be a JSON object like {\"command\": \"vllm serve …\"}")
        return
    for key in config:
        if key not in ("command", "vllm_version"):
            add(f"config.{key}", "unknown key; config carries only 'command' and 'vllm_version'")
    command = config.get("command")
    if command is None:
        if backend in COMMAND_BACKENDS:
            add("config.command", f"is required for the {backend} backend (the command that launches the server)")
    elif not isinstance(command, str) or not command.strip():
        add("config.command", "must be a non-empty string")
    elif len(command) > MAX_COMMAND_LENGTH:
        # The command travels in every heartbeat answer of the worker running it.
        add("config.command", f"must be at most {MAX_COMMAND_LENGTH} characters (got {len(command)})")
    elif backend is not None and backend not in COMMAND_BACKENDS and backend in BUILTIN_BACKENDS:
        add("config.command", f"the {backend} backend builds its own launch command from the model; leave command unset")
    else:
        try:
            shlex.split(command)
        except ValueError as exc:
            add("config.command", f"cannot be parsed as a shell command line: {exc}")
        else:
            # What runs is the recipe's program; the command gives its arguments (workers/engines.py).
            version = config.get("vllm_version") if isinstance(config.get("vllm_version"), str) else None
            problem = engines.check_command(backend, command, vllm_version=version) if backend in COMMAND_BACKENDS else None
            if problem:
                add("config.command", problem)
    if "vllm_version" in config:
        version = config["vllm_version"]
        if backend is not None and backend not in VLLM_BACKENDS:
            add("config.vllm_version", "only applies to the vllm and vllm-omni backends")
        elif not isinstance(version, str) or not _VERSION.match(version):
            add("config.vllm_version", "must be a version string such as '0.6.3'")


def merge_patch(current: dict, patch: Any) -> dict:
    """PATCH semantics: replace each given key whole. A policy change drops the old config,
    so a new policy must bring its own (the SDK always sends both)."""
    if not isinstance(patch, dict):
        raise SpecError({"non_field_errors": ["the request body must be a JSON object"]})
    merged = dict(current)
    merged.update(patch)
    if "execution_policy" in patch and patch["execution_policy"] != current.get("execution_policy") \
            and "execution_policy_config" not in patch:
        merged["execution_policy_config"] = None
    return merged
