"""The dashboard's front door: `/` sends a signed-in user to their current team; the 404 handler."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views import defaults

from accounts.models import Team
from accounts.permissions import LAST_TEAM_SESSION_KEY


@login_required
def home(request):
    teams = Team.objects.filter(memberships__user=request.user)
    last = request.session.get(LAST_TEAM_SESSION_KEY)
    team = (teams.filter(slug=last).first() if last else None) or teams.order_by("name").first()
    if team is None:
        return redirect("accounts:team_create")
    return redirect("accounts:team_home", team=team.slug)


def not_found(request, exception=None):
    """404: JSON under /api/ (what API clients and the SDK read), the dashboard's page elsewhere."""
    if request.path == "/api" or request.path.startswith("/api/"):
        return JsonResponse({"error": "not found", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)
