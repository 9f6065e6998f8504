"""Error bodies the official SDK can read (SDK_WIRE.md §3).

The SDK shows `{"error": "<string>"}` verbatim and drops every other key, so `error` always carries
a readable message (for 403, exactly one of the three codes the SDK recognises); `detail`, `code`
and `fields` serve other clients.
"""
from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

FORBIDDEN_CODES = ("wrong_credential_type", "project_scope_mismatch", "scope_insufficient")


class ApiError(exceptions.APIException):
    """An error with an explicit status and wire body."""

    def __init__(self, status_code: int, error: str, *, code: str = "", detail: str = "", **extra: Any):
        self.status_code = status_code
        self.body: dict[str, Any] = {"error": error}
        if code:
            self.body["code"] = code
        if detail:
            self.body["detail"] = detail
        self.body.update(extra)
        super().__init__(detail or error)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "invalid_token", code="invalid_token", detail=detail)


def forbidden(code: str, detail: str) -> ApiError:
    assert code in FORBIDDEN_CODES
    return ApiError(403, code, code=code, detail=detail)


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail, code="not_found", detail=detail)


def validation_failed(errors: dict[str, list[str]]) -> ApiError:
    """400 whose `error` names the first offending field, with all of them under `fields`."""
    first_field, messages = next(iter(errors.items()))
    summary = f"{first_field}: {messages[0]}"
    if len(errors) > 1:
        summary += f" (and {len(errors) - 1} more field error(s))"
    return ApiError(400, summary, code="invalid", fields=errors)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(exc.body, status=exc.status_code)
    if isinstance(exc, Http404):
        return Response({"error": str(exc) or "not found", "code": "not_found"}, status=404)
    if isinstance(exc, exceptions.ParseError):
        return Response({"error": f"invalid JSON body: {exc.detail}", "code": "parse_error"}, status=400)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        errors = {key: [str(m) for m in (v if isinstance(v, list) else [v])] for key, v in detail.items()}
        return Response(validation_failed(errors).body, status=400)
    if isinstance(exc, exceptions.APIException):
        return Response({"error": str(exc.detail), "code": exc.default_code}, status=exc.status_code)
    return None


HTTP_STATUS = status
