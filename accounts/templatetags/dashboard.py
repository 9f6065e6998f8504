"""Template helpers for the dashboard: role checks, status badges, money."""
from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()

_BADGE = {
    # phase / replica / worker state → badge colour class (see static/css/app.css)
    "ready": "ok", "online": "ok", "active": "ok",
    "scheduling": "busy", "provisioning": "busy", "bootstrapping": "busy", "starting": "busy",
    "placed": "busy", "pending": "idle", "draining": "warn", "unhealthy": "warn",
    "error": "bad", "failed": "bad", "offline": "bad", "revoked": "bad", "expired": "bad",
    "stopped": "idle",
}


@register.filter
def can(request, role: str) -> bool:
    """`{% if request|can:"member" %}`: the request's team membership has at least `role`."""
    membership = getattr(request, "membership", None)
    return membership is not None and membership.can(role)


@register.inclusion_tag("partials/badge.html")
def badge(state, label=None):
    state = str(state or "")
    return {"state": state, "label": label or state.replace("_", " "), "tone": _BADGE.get(state, "idle")}


@register.filter
def usd(value, places: int = 2) -> str:
    if value is None or value == "":
        return "—"
    return f"${Decimal(str(value)):,.{int(places)}f}"


@register.filter
def labelled(field) -> str:
    """A field's first error, starting with the field's label (for the summary above a form)."""
    error, label = str(field.errors[0]), str(field.label)
    return error if error.startswith(label) else f"{label}: {error}"
