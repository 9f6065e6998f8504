"""Reading untrusted JSON bodies without a 500.

`json.loads` recurses in C: 100,000 nested brackets raise `RecursionError`, and a body a few
hundred levels deep parses but then breaks every recursive walker after it (validators, the JSON
encoder of the response). Object keys are not checked by anyone downstream either, and a key with
a lone surrogate cannot be encoded as UTF-8 (not in the database, not in the error message that
names it). So bodies are parsed here, once, and refused with a message naming the field when they
are nested deeper than `MAX_DEPTH` or carry a key that is not storable text.

`BoundedJSONParser` is the DRF parser of the API; `loads()` serves the plain Django views.
"""
from __future__ import annotations

import json
from typing import Any

from rest_framework.parsers import JSONParser

from .api_errors import validation_failed

# Far beyond any real spec (the deepest, autoscaling.workers.cloud_pool.gpu_pool[i], is 5) and far
# below the interpreter's recursion limit.
MAX_DEPTH = 32


class JsonInputError(ValueError):
    """A body that is not acceptable JSON; `field` is the offending path ("" for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field or "non_field_errors"
        self.message = message


def safe_key(key: str) -> str:
    """A key as printable, UTF-8-encodable text (lone surrogates and NUL shown escaped)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _key_problem(key: str) -> str | None:
    if "\x00" in key:
        return "key must not contain NUL characters"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "key must be valid Unicode text (no lone surrogates)"
    return None


def check_structure(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonInputError for nesting deeper than max_depth or an unstorable object key.

    Iterative (an explicit stack), so it is safe on whatever `json.loads` managed to build."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= max_depth:
                raise JsonInputError(_top(path), f"nested deeper than {max_depth} levels")
            for key, child in item.items():
                problem = _key_problem(key)
                name = safe_key(key)
                child_path = f"{path}.{name}" if path else name
                if problem:
                    raise JsonInputError(child_path, problem)
                if isinstance(child, (dict, list)):
                    stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise JsonInputError(_top(path), f"nested deeper than {max_depth} levels")
            for i, child in enumerate(item):
                if isinstance(child, (dict, list)):
                    stack.append((child, f"{path}[{i}]", depth + 1))


def _top(path: str) -> str:
    """The top-level field of a path (the part a client can act on), or the whole body."""
    for i, ch in enumerate(path):
        if ch in ".[":
            return path[:i]
    return path


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads for untrusted input: JsonInputError instead of ValueError/RecursionError."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise JsonInputError("", f"JSON nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonInputError("", f"invalid JSON: {exc}") from None
    check_structure(value, max_depth)
    return value


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser with `loads()`'s bounds: a 400 naming the field, never a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            return loads(raw)
        except JsonInputError as exc:
            raise validation_failed({exc.field: [exc.message]}) from None
