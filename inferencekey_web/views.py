"""The dashboard's front door: `/` sends a signed-in user to their current team."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect

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
