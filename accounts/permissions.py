"""Who may see and do what in the dashboard.

Every team-scoped view is wrapped in `team_view(role)`: anonymous users go to the login page, a
user who is not a member of the team in the URL gets 404 (so a team's existence never leaks), and
a member below `role` gets 403. The resolved team and membership are put on the request.
"""
from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, resolve_url
from django.utils.http import urlencode

from .models import Membership, Project, Role

# What each role may do, in one place so templates and views agree.
MANAGE_WORKLOADS = Role.MEMBER
MANAGE_WORKERS = Role.ADMIN
MANAGE_CREDENTIALS = Role.ADMIN
MANAGE_MEMBERS = Role.ADMIN
MANAGE_PROJECTS = Role.ADMIN
MANAGE_TEAM = Role.OWNER

LAST_TEAM_SESSION_KEY = "current_team"


def membership_for(user, team_slug: str) -> Membership:
    membership = Membership.objects.select_related("team").filter(user=user, team__slug=team_slug).first()
    if membership is None:
        raise Http404("No such team")
    return membership


def team_view(role: str = Role.VIEWER, *, project: bool = False):
    """Decorate a view taking `team` (and, with project=True, `project`) slugs from the URL."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated and getattr(request, "htmx", False):
                return htmx_login_redirect(request)
            return logged_in(request, *args, **kwargs)

        @login_required
        def logged_in(request, *args, team: str, **kwargs):
            membership = membership_for(request.user, team)
            request.team, request.membership = membership.team, membership
            if request.session.get(LAST_TEAM_SESSION_KEY) != team:  # no session write on every page
                request.session[LAST_TEAM_SESSION_KEY] = team
            if project:
                kwargs["project"] = get_object_or_404(Project, team=membership.team, slug=kwargs["project"])
                request.project = kwargs["project"]
            # Membership is checked before role so an outsider learns nothing from a 403.
            if not membership.can(role):
                raise PermissionDenied(f"This needs the {Role(role).label.lower()} role or higher.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def htmx_login_redirect(request) -> HttpResponse:
    """An htmx request from a session that expired: send the whole page to the login form
    (HX-Redirect), back to the page the user was on, instead of swapping the login page into
    a table. 401, so anything else reading it does not mistake it for content."""
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    back = current.path + (f"?{current.query}" if current.query else "") if current.path else request.path
    response = HttpResponse(status=401)
    response["HX-Redirect"] = f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back})}"
    return response


def can(request, role: str) -> bool:
    membership = getattr(request, "membership", None)
    return membership is not None and membership.can(role)
