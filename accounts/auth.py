"""Bearer-credential checks for the control plane (SDK_WIRE.md §2–3)."""
from __future__ import annotations

from inferencekey_web.lib import credentials
from inferencekey_web.lib.api_errors import forbidden, unauthorized

from . import services
from .models import Project, SdkToken


def bearer(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def sdk_token_from(request) -> SdkToken:
    """The active SDK token of the request, or a 401/403 ApiError with the contract's body."""
    return sdk_token_for(request.META.get("HTTP_AUTHORIZATION", ""))


def sdk_token_for(authorization: str) -> SdkToken:
    """The active SDK token named by an `Authorization` header value, or a 401/403 ApiError."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip() if scheme.lower() == "bearer" else ""
    if not value:
        raise unauthorized("missing bearer token: send Authorization: Bearer ik_sdk_…")
    kind = credentials.kind_of(value)
    if kind is not None and kind != credentials.SDK_PREFIX:
        raise forbidden("wrong_credential_type", f"this route takes an ik_sdk_ token, not an {kind}… credential")
    token = services.lookup(SdkToken, value)
    if token is None:
        raise unauthorized("unknown, revoked or expired token")
    return token


def require_scope(token: SdkToken, scope: str) -> None:
    if scope not in token.scopes:
        raise forbidden("scope_insufficient", f"this token lacks the {scope} scope")


def project_for(token: SdkToken, project_ref: str) -> Project:
    """The token's project, if `project_ref` names it by slug or id; else project_scope_mismatch."""
    project = token.project
    if project_ref not in (project.slug, project.id):
        raise forbidden("project_scope_mismatch", f"this token is scoped to project {project.slug!r}, not {project_ref!r}")
    return project
