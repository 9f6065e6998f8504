"""Every dashboard URL × owner, admin, member, viewer, outsider, anonymous → the expected status.

An outsider (a member of another team) gets 404 everywhere: the team's objects never leak, not
even their existence. Anonymous users are sent to the login page."""
from __future__ import annotations

import pytest
from django.urls import reverse

from accounts import services as account_services
from accounts.models import ROLE_RANK, Membership, Role

from ..specs import vllm_spec
from .conftest import login_as

PERSONAS = ("owner", "admin", "member", "viewer", "outsider", "anonymous")


def _team(t, **_):
    return {"team": t.team.slug}


def _project(t, **_):
    return {"team": t.team.slug, "project": t.project.slug}


def _workload(t, workload, **_):
    return {**_project(t), "slug": workload.slug}


def _worker(t, worker, **_):
    return {"team": t.team.slug, "pk": worker.pk}


def _viewer_membership(t, users, **_):
    return {"team": t.team.slug, "pk": Membership.objects.get(team=t.team, user=users["viewer"]).pk}


def _sdk_token(t, **_):
    return {**_project(t), "pk": t.project.sdk_tokens.first().pk}


def _data_key(t, **_):
    return {**_project(t), "pk": t.project.data_keys.first().pk}


WORKLOAD_FORM = {"name": "Bot 2", "slug": "bot-2", "model_name": "m", "backend": "ollama", "task_type": "text2text",
                 "execution_policy": "fixed", "replicas": "1"}

# (url name, method, url kwargs, lowest role allowed, status when allowed, POST data)
ROUTES = [
    ("accounts:team_home", "get", _team, Role.VIEWER, 200, None),
    ("accounts:team_settings", "get", _team, Role.OWNER, 200, None),
    ("accounts:team_settings", "post", _team, Role.OWNER, 302, {"name": "Renamed"}),
    ("accounts:members", "get", _team, Role.VIEWER, 200, None),
    ("accounts:member_invite", "post", _team, Role.ADMIN, 302, {"email": "new@example.com", "role": "viewer"}),
    ("accounts:member_role", "post", _viewer_membership, Role.ADMIN, 302, {"role": "member"}),
    ("accounts:member_remove", "get", _viewer_membership, Role.ADMIN, 200, None),
    ("accounts:member_remove", "post", _viewer_membership, Role.ADMIN, 302, {}),
    ("accounts:team_leave", "post", _team, Role.VIEWER, 302, {}),
    ("accounts:project_create", "get", _team, Role.ADMIN, 200, None),
    ("accounts:project_create", "post", _team, Role.ADMIN, 302, {"name": "Second"}),
    ("accounts:project_home", "get", _project, Role.VIEWER, 302, None),
    ("accounts:project_settings", "get", _project, Role.ADMIN, 200, None),
    ("accounts:project_settings", "post", _project, Role.ADMIN, 302, {"name": "Demo 2", "slug": "demo"}),
    ("accounts:sdk_tokens", "get", _project, Role.VIEWER, 200, None),
    ("accounts:sdk_token_create", "post", _project, Role.ADMIN, 302, {"name": "ci", "scopes": ["workload:read"]}),
    ("accounts:sdk_token_revoke", "post", _sdk_token, Role.ADMIN, 302, {}),
    ("accounts:data_keys", "get", _project, Role.VIEWER, 200, None),
    ("accounts:data_key_create", "post", _project, Role.ADMIN, 302, {"name": "app", "all_workloads": "all"}),
    ("accounts:data_key_revoke", "post", _data_key, Role.ADMIN, 302, {}),
    ("workloads:list", "get", _project, Role.VIEWER, 200, None),
    ("workloads:create", "get", _project, Role.MEMBER, 200, None),
    ("workloads:create", "post", _project, Role.MEMBER, 302, WORKLOAD_FORM),
    ("workloads:schedule_preview", "post", _project, Role.MEMBER, 200, {"schedule_kind": "cron", "cron": "0 2 * * *"}),
    ("workloads:pool_preview", "post", _project, Role.MEMBER, 200, {"cuda_version": "12.8"}),
    ("workloads:detail", "get", _workload, Role.VIEWER, 200, None),
    ("workloads:live", "get", _workload, Role.VIEWER, 200, None),
    ("workloads:edit", "get", _workload, Role.MEMBER, 200, None),
    ("workloads:edit", "post", _workload, Role.MEMBER, 302, {**WORKLOAD_FORM, "slug": "support-bot"}),
    ("workloads:delete", "get", _workload, Role.MEMBER, 200, None),
    ("workloads:delete", "post", _workload, Role.MEMBER, 302, {}),
    ("workloads:test", "post", _workload, Role.VIEWER, 200, {"api_key": "not-a-key", "message": "hi"}),
    ("catalog:gpus", "get", _team, Role.VIEWER, 200, None),
    ("workers:list", "get", _team, Role.VIEWER, 200, None),
    ("workers:register", "get", _team, Role.ADMIN, 200, None),
    ("workers:register", "post", _team, Role.ADMIN, 302, {"name": "box-2"}),
    ("workers:detail", "get", _worker, Role.VIEWER, 200, None),
    ("workers:drain", "post", _worker, Role.ADMIN, 302, {}),
    ("workers:delete", "get", _worker, Role.ADMIN, 200, None),
    ("workers:delete", "post", _worker, Role.ADMIN, 302, {}),
]


def expected_status(persona: str, lowest: str, allowed: int) -> int:
    if persona == "anonymous":
        return 302
    if persona == "outsider":
        return 404
    return allowed if ROLE_RANK[Role(persona)] >= ROLE_RANK[Role(lowest)] else 403


CASES = [(route, persona) for route in ROUTES for persona in PERSONAS]


@pytest.mark.parametrize("route,persona", CASES, ids=[f"{r[0]}-{r[1]}-{p}" for r, p in CASES])
def test_route_answers_each_persona_as_its_role_allows(client, tenant, users, workload, worker, catalog, route, persona):
    name, method, kwargs, lowest, allowed, data = route
    url = reverse(name, kwargs=kwargs(tenant, users=users, workload=workload, worker=worker))
    response = getattr(login_as(client, users, persona), method)(url, data or {})
    assert response.status_code == expected_status(persona, lowest, allowed), response.content[:300]
    if persona == "anonymous":
        assert response["Location"].startswith(reverse("accounts:login"))


def test_outsider_page_does_not_name_the_team(client, tenant, users):
    response = login_as(client, users, "outsider").get(reverse("accounts:team_home", kwargs={"team": tenant.team.slug}))
    assert response.status_code == 404 and tenant.team.name.encode() not in response.content


def test_foreign_workload_is_404_under_own_project(client, tenant, users, foreign_workload):
    url = reverse("workloads:detail", kwargs={**_project(tenant), "slug": foreign_workload.slug})
    assert login_as(client, users, "owner").get(url).status_code == 404


def test_foreign_worker_is_404_under_own_team(client, tenant, users, foreign_worker):
    url = reverse("workers:detail", kwargs={"team": tenant.team.slug, "pk": foreign_worker.pk})
    assert login_as(client, users, "owner").post(url.replace("/workers/", "/workers/") + "drain/").status_code == 404


def test_foreign_key_cannot_be_revoked_through_own_project(client, tenant, other_tenant, users):
    key = other_tenant.project.data_keys.first()
    url = reverse("accounts:data_key_revoke", kwargs={**_project(tenant), "pk": key.pk})
    assert login_as(client, users, "owner").post(url).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_foreign_membership_cannot_be_changed(client, tenant, other_tenant, users):
    theirs = Membership.objects.get(team=other_tenant.team)
    url = reverse("accounts:member_role", kwargs={"team": tenant.team.slug, "pk": theirs.pk})
    assert login_as(client, users, "owner").post(url, {"role": "viewer"}).status_code == 404
    assert Membership.objects.get(pk=theirs.pk).role == Role.OWNER


def test_workload_list_shows_no_other_team_workload(client, tenant, users, workload, foreign_workload):
    response = login_as(client, users, "owner").get(reverse("workloads:list", kwargs=_project(tenant)))
    assert b"support-bot" in response.content and b"secret-bot" not in response.content


def test_viewer_forged_edit_post_changes_nothing(client, tenant, users, workload):
    url = reverse("workloads:edit", kwargs=_workload(tenant, workload))
    response = login_as(client, users, "viewer").post(url, {**WORKLOAD_FORM, "slug": "support-bot", "name": "Hacked"})
    workload.refresh_from_db()
    assert response.status_code == 403 and workload.name == "Support Bot"


def test_admin_cannot_demote_an_owner(client, tenant, users):
    owner = Membership.objects.get(team=tenant.team, user=users["owner"])
    url = reverse("accounts:member_role", kwargs={"team": tenant.team.slug, "pk": owner.pk})
    assert login_as(client, users, "admin").post(url, {"role": "viewer"}).status_code == 403


def test_admin_cannot_make_an_owner(client, tenant, users):
    url = reverse("accounts:member_role", kwargs=_viewer_membership(tenant, users))
    login_as(client, users, "admin").post(url, {"role": "owner"})
    assert Membership.objects.get(team=tenant.team, user=users["viewer"]).role == Role.VIEWER


def test_outsider_cannot_use_a_foreign_project_slug(client, tenant, users):
    account_services.project_create(team=tenant.team, name="Hidden")
    url = reverse("workloads:list", kwargs={"team": tenant.team.slug, "project": "hidden"})
    assert login_as(client, users, "outsider").get(url).status_code == 404


def test_unknown_project_in_own_team_is_404(client, tenant, users):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": "nope"})
    assert login_as(client, users, "owner").post(url, vllm_spec()).status_code == 404
