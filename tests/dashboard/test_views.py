"""Accounts, credentials, members, workers, GPU Resources and the workload pages, through the views."""
from __future__ import annotations

import ast
import html

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from accounts.models import DataKey, Membership, Project, Role, SdkToken, Team
from workers.models import JoinToken, Replica, Worker
from workloads.models import ReadinessEvent

from .conftest import login_as


def _project_kwargs(tenant):
    return {"team": tenant.team.slug, "project": tenant.project.slug}


def _workload_kwargs(tenant, workload):
    return {**_project_kwargs(tenant), "slug": workload.slug}


# --- accounts -------------------------------------------------------------------------------------


def test_signup_creates_user_team_and_logs_in_from_the_confirmation_link(client, db, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.post(reverse("accounts:signup"), {"email": "Ada@Example.com", "team_name": "Analytical",
                                             "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"})
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/signup/confirm/" in line)
    response = client.post(link.replace("http://testserver", ""))
    team = Team.objects.get(slug="analytical")
    assert response.status_code == 302 and response["Location"] == reverse("accounts:team_home", kwargs={"team": "analytical"})
    assert Membership.objects.get(team=team).role == Role.OWNER and get_user_model().objects.get(email="ada@example.com")


def test_login_by_email_is_case_insensitive(client, tenant):
    response = client.post(reverse("accounts:login"), {"username": "OWNER@example.com", "password": "pw-for-tests-123"})
    assert response.status_code == 302 and response["Location"] == reverse("home")


def test_home_sends_user_to_their_team(client, tenant):
    client.force_login(tenant.owner)
    assert client.get(reverse("home"))["Location"] == reverse("accounts:team_home", kwargs={"team": tenant.team.slug})


def test_home_without_team_asks_to_create_one(client, db):
    client.force_login(get_user_model().objects.create_user(username="lone@example.com", email="lone@example.com"))
    assert client.get(reverse("home"))["Location"] == reverse("accounts:team_create")


def test_logout_is_a_post(client, tenant):
    client.force_login(tenant.owner)
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("home")).status_code == 302 and "_auth_user_id" not in client.session


def test_password_reset_sends_console_email(client, tenant, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    client.post(reverse("accounts:password_reset"), {"email": "owner@example.com"})
    assert len(mail.outbox) == 1 and "/accounts/reset/" in mail.outbox[0].body


def test_team_switcher_lists_every_team_of_the_user(client, tenant, other_tenant):
    Membership.objects.create(team=other_tenant.team, user=tenant.owner, role=Role.VIEWER)
    response = login_as(client, {"o": tenant.owner}, "o").get(reverse("accounts:team_home", kwargs={"team": "acme"}))
    assert b'href="/t/globex/"' in response.content and b'href="/t/acme/"' in response.content


def test_project_create_derives_slug(client, tenant, users):
    login_as(client, users, "admin").post(reverse("accounts:project_create", kwargs={"team": "acme"}), {"name": "Big Models"})
    assert Project.objects.filter(team=tenant.team, slug="big-models").exists()


def test_project_rename_refuses_a_taken_slug(client, tenant, users):
    Project.objects.create(team=tenant.team, name="Other", slug="other")
    url = reverse("accounts:project_settings", kwargs=_project_kwargs(tenant))
    response = login_as(client, users, "admin").post(url, {"name": "Demo", "slug": "other"})
    assert response.status_code == 200 and b"already has a project" in response.content


# --- members --------------------------------------------------------------------------------------


def test_admin_cannot_invite_an_owner(client, tenant, users):
    url = reverse("accounts:member_invite", kwargs={"team": "acme"})
    response = login_as(client, users, "admin").post(url, {"email": "x@example.com", "role": "owner"})
    assert response.status_code == 400 and not get_user_model().objects.filter(email="x@example.com").exists()


def test_last_owner_cannot_leave(client, tenant, users):
    login_as(client, users, "owner").post(reverse("accounts:team_leave", kwargs={"team": "acme"}))
    assert Membership.objects.filter(team=tenant.team, user=users["owner"], role=Role.OWNER).exists()


def test_last_owner_cannot_demote_themselves(client, tenant, users):
    owner = Membership.objects.get(team=tenant.team, user=users["owner"])
    url = reverse("accounts:member_role", kwargs={"team": "acme", "pk": owner.pk})
    response = login_as(client, users, "owner").post(url, {"role": "admin"}, follow=True)
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER and b"last owner" in response.content


def test_owner_can_leave_once_another_owner_exists(client, tenant, users):
    Membership.objects.filter(team=tenant.team, user=users["admin"]).update(role=Role.OWNER)
    login_as(client, users, "owner").post(reverse("accounts:team_leave", kwargs={"team": "acme"}))
    assert not Membership.objects.filter(team=tenant.team, user=users["owner"]).exists()


def test_admin_removes_a_viewer(client, tenant, users):
    viewer = Membership.objects.get(team=tenant.team, user=users["viewer"])
    login_as(client, users, "admin").post(reverse("accounts:member_remove", kwargs={"team": "acme", "pk": viewer.pk}))
    assert not Membership.objects.filter(pk=viewer.pk).exists()


# --- SDK tokens and API keys ------------------------------------------------------------------------


def test_sdk_token_secret_is_shown_once_after_a_redirect(client, tenant, users):
    url = reverse("accounts:sdk_token_create", kwargs=_project_kwargs(tenant))
    created = login_as(client, users, "admin").post(url, {"name": "ci", "scopes": ["workload:read"]}, follow=True)
    token = SdkToken.objects.get(name="ci")
    listing = client.get(reverse("accounts:sdk_tokens", kwargs=_project_kwargs(tenant)))
    assert created.redirect_chain[-1][1] == 302 and f"ik_sdk_{token.lookup_id}_".encode() in created.content
    assert "no-store" in created["Cache-Control"]
    assert f"ik_sdk_{token.lookup_id}_".encode() not in listing.content and token.display.encode() in listing.content


@pytest.mark.parametrize("kind,data", [("sdk_token", {"name": "ci", "scopes": ["workload:read"]}),
                                       ("data_key", {"name": "app", "all_workloads": "all"})])
def test_reloading_the_page_with_a_new_secret_creates_nothing(client, tenant, users, kind, data):
    model = SdkToken if kind == "sdk_token" else DataKey
    before = model.objects.count()
    created = login_as(client, users, "admin").post(reverse(f"accounts:{kind}_create", kwargs=_project_kwargs(tenant)), data)
    assert created.status_code == 302  # a reload repeats this GET, not the POST
    client.get(created["Location"])
    again = client.get(created["Location"])
    assert model.objects.count() == before + 1 and b"secret-value" not in again.content


def test_sdk_token_gets_chosen_scopes(client, tenant, users):
    url = reverse("accounts:sdk_token_create", kwargs=_project_kwargs(tenant))
    login_as(client, users, "admin").post(url, {"name": "ro", "scopes": ["workload:read"]})
    assert SdkToken.objects.get(name="ro").scopes == ["workload:read"]


def test_data_key_scoped_to_chosen_workloads(client, tenant, users, workload):
    url = reverse("accounts:data_key_create", kwargs=_project_kwargs(tenant))
    login_as(client, users, "admin").post(url, {"name": "one", "all_workloads": "some", "workloads": [workload.pk]})
    key = DataKey.objects.get(name="one")
    assert not key.all_workloads and list(key.workloads.all()) == [workload]


def test_data_key_with_some_scope_needs_a_workload(client, tenant, users):
    url = reverse("accounts:data_key_create", kwargs=_project_kwargs(tenant))
    response = login_as(client, users, "admin").post(url, {"name": "none", "all_workloads": "some"})
    assert response.status_code == 400 and not DataKey.objects.filter(name="none").exists()


def test_data_key_expiry_is_set(client, tenant, users):
    url = reverse("accounts:data_key_create", kwargs=_project_kwargs(tenant))
    login_as(client, users, "admin").post(url, {"name": "tmp", "all_workloads": "all", "expires_in_days": "7"})
    assert DataKey.objects.get(name="tmp").expires_at is not None


def test_htmx_revoke_returns_the_revoked_row(client, tenant, users):
    key = tenant.project.data_keys.first()
    url = reverse("accounts:data_key_revoke", kwargs={**_project_kwargs(tenant), "pk": key.pk})
    response = login_as(client, users, "admin").post(url, HTTP_HX_REQUEST="true")
    assert response.content.lstrip().startswith(b"<tr") and b'data-state="revoked"' in response.content
    assert DataKey.objects.active().filter(pk=key.pk).count() == 0


def test_viewer_sees_no_create_or_revoke_controls(client, tenant, users):
    response = login_as(client, users, "viewer").get(reverse("accounts:data_keys", kwargs=_project_kwargs(tenant)))
    assert b"Revoke" not in response.content and b"New API key" not in response.content


# --- workloads ------------------------------------------------------------------------------------


def test_list_filters_by_backend_and_search(client, tenant, users, workload):
    url = reverse("workloads:list", kwargs=_project_kwargs(tenant))
    login_as(client, users, "viewer")
    assert b"support-bot" in client.get(url, {"backend": "vllm", "q": "support"}).content
    assert b"support-bot" not in client.get(url, {"backend": "ollama"}).content


def test_list_policy_filter_treats_no_policy_as_fixed(client, tenant, users, workload):
    response = login_as(client, users, "viewer").get(reverse("workloads:list", kwargs=_project_kwargs(tenant)), {"policy": "fixed"})
    assert b"support-bot" in response.content


def test_list_paginates(client, tenant, users):
    from workloads.models import Workload

    Workload.objects.bulk_create(Workload(project=tenant.project, name=f"W{i:03}", slug=f"w{i:03}", model_name="m",
                                          backend="ollama") for i in range(30))
    response = login_as(client, users, "viewer").get(reverse("workloads:list", kwargs=_project_kwargs(tenant)), {"page": 2})
    assert b"w029" in response.content and b"w000" not in response.content and b"Page 2 of 2" in response.content


def test_list_htmx_returns_only_the_table(client, tenant, users, workload):
    response = login_as(client, users, "viewer").get(reverse("workloads:list", kwargs=_project_kwargs(tenant)),
                                                     HTTP_HX_REQUEST="true")
    assert response.content.lstrip().startswith(b'<div id="table"') and b"<nav" not in response.content[:200]


def test_empty_list_says_what_to_do(client, tenant, users):
    response = login_as(client, users, "member").get(reverse("workloads:list", kwargs=_project_kwargs(tenant)))
    assert b"Declare your first workload" in response.content


def test_detail_shows_sdk_snippet_and_endpoint(client, tenant, users, workload):
    response = login_as(client, users, "viewer").get(reverse("workloads:detail", kwargs=_workload_kwargs(tenant, workload)))
    assert b"WorkloadSpec(" in response.content and b"data.endpoint(ref.workload_slug)" in response.content
    assert b"/endpoint/demo/support-bot/v1" in response.content


def test_sdk_snippet_is_python_that_declares_the_stored_spec(tenant, workload):
    from workloads.views import sdk_snippet

    tree = ast.parse(sdk_snippet(workload))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "WorkloadSpec")
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kwargs["model"] == workload.model_name and kwargs["command"] == workload.config["command"]


def test_live_partial_shows_events_and_replicas(client, tenant, users, workload, worker):
    Replica.objects.create(workload=workload, worker=worker, state=Replica.State.STARTING, port=8101, log_tail="loading weights")
    response = login_as(client, users, "viewer").get(reverse("workloads:live", kwargs=_workload_kwargs(tenant, workload)),
                                                     HTTP_HX_REQUEST="true")
    assert b"Workload accepted" in response.content and b"box-1" in response.content and b"loading weights" in response.content


def test_live_partial_polls_slowly_once_settled(client, tenant, users, workload):
    type(workload).objects.filter(pk=workload.pk).update(phase="ready", observed_generation=1)
    response = login_as(client, users, "viewer").get(reverse("workloads:live", kwargs=_workload_kwargs(tenant, workload)))
    assert b'hx-trigger="every 15s"' in response.content


def test_live_partial_of_deleted_workload_stops_polling(client, tenant, users, workload):
    url = reverse("workloads:live", kwargs=_workload_kwargs(tenant, workload))
    workload.delete()
    assert login_as(client, users, "viewer").get(url).status_code == 286


def test_delete_removes_workload_and_its_events(client, tenant, users, workload):
    login_as(client, users, "member").post(reverse("workloads:delete", kwargs=_workload_kwargs(tenant, workload)))
    assert not ReadinessEvent.objects.exists() and not tenant.project.workloads.exists()


def test_viewer_detail_has_no_edit_controls(client, tenant, users, workload):
    response = login_as(client, users, "viewer").get(reverse("workloads:detail", kwargs=_workload_kwargs(tenant, workload)))
    assert b'id="edit-workload"' not in response.content and b'id="delete-workload"' not in response.content


def test_test_endpoint_proxies_to_gateway_and_shows_reply(client, tenant, users, workload, monkeypatch):
    sent = {}

    def fake_post(url, **kwargs):
        sent.update(url=url, **kwargs)
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": "Hola!"}}]})

    monkeypatch.setattr(httpx, "post", fake_post)
    response = login_as(client, users, "viewer").post(reverse("workloads:test", kwargs=_workload_kwargs(tenant, workload)),
                                                      {"api_key": tenant.api_key, "message": "hi"}, HTTP_HX_REQUEST="true")
    assert b"Hola!" in response.content and sent["url"].endswith("/endpoint/demo/support-bot/v1/chat/completions")
    assert sent["headers"]["Authorization"] == f"Bearer {tenant.api_key}"


def test_test_endpoint_shows_gateway_error(client, tenant, users, workload, monkeypatch):
    monkeypatch.setattr(httpx, "post", lambda url, **kw: httpx.Response(401, json={"error": "invalid_token"}))
    response = login_as(client, users, "viewer").post(reverse("workloads:test", kwargs=_workload_kwargs(tenant, workload)),
                                                      {"api_key": tenant.api_key, "message": "hi"})
    assert b"HTTP 401: invalid_token" in response.content


def test_test_endpoint_refuses_a_non_live_key(client, tenant, users, workload):
    response = login_as(client, users, "viewer").post(reverse("workloads:test", kwargs=_workload_kwargs(tenant, workload)),
                                                      {"api_key": tenant.sdk_token, "message": "hi"})
    assert b"starting with ik_live_" in response.content


# --- workers and GPU Resources -------------------------------------------------------------------


def test_register_worker_shows_join_command_once(client, tenant, users):
    response = login_as(client, users, "admin").post(reverse("workers:register", kwargs={"team": "acme"}),
                                                     {"name": "gpu box", "labels": "rack=a1"}, follow=True)
    token, page = JoinToken.objects.get(team=tenant.team), html.unescape(response.content.decode())
    assert f"IK_JOIN_TOKEN=ik_join_{token.lookup_id}_" in page and "--name 'gpu box'" in page
    assert "/agent/inferencekey-agent.pyz" in page
    assert token.labels == {"rack": "a1"} and "no-store" in response["Cache-Control"]


def test_reloading_the_join_command_page_mints_no_other_token(client, tenant, users):
    url = reverse("workers:register", kwargs={"team": "acme"})
    created = login_as(client, users, "admin").post(url, {"name": "gpu box"})
    assert created.status_code == 302 and created["Location"] == url
    assert b"ik_join_" in client.get(url).content
    assert b"ik_join_" not in client.get(url).content and JoinToken.objects.filter(team=tenant.team).count() == 1


def test_register_worker_rejects_bad_labels(client, tenant, users):
    response = login_as(client, users, "admin").post(reverse("workers:register", kwargs={"team": "acme"}), {"labels": "oops"})
    assert response.status_code == 400 and not JoinToken.objects.exists()


def test_worker_list_shows_state_gpus_and_utilization(client, tenant, users, worker):
    response = login_as(client, users, "viewer").get(reverse("workers:list", kwargs={"team": "acme"}))
    assert b"box-1" in response.content and b"NVIDIA L40S" in response.content and b"37%" in response.content


def test_drain_sets_worker_draining(client, tenant, users, worker):
    login_as(client, users, "admin").post(reverse("workers:drain", kwargs={"team": "acme", "pk": worker.pk}))
    worker.refresh_from_db()
    assert worker.state == Worker.State.DRAINING


def test_delete_worker_orphans_its_replicas_for_rescheduling(client, tenant, users, worker, workload):
    replica = Replica.objects.create(workload=workload, worker=worker, state=Replica.State.READY)
    login_as(client, users, "admin").post(reverse("workers:delete", kwargs={"team": "acme", "pk": worker.pk}))
    replica.refresh_from_db()
    assert not Worker.objects.filter(pk=worker.pk).exists()
    assert replica.worker is None and replica.desired and replica.message == "its worker was deleted"


def test_worker_detail_shows_its_replica_logs(client, tenant, users, worker, workload):
    Replica.objects.create(workload=workload, worker=worker, state=Replica.State.READY, log_tail="Uvicorn running")
    response = login_as(client, users, "viewer").get(reverse("workers:detail", kwargs={"team": "acme", "pk": worker.pk}))
    assert b"Uvicorn running" in response.content and b"Support Bot" in response.content


def test_gpu_page_shows_team_gpu_ids(client, tenant, users, worker, catalog):
    gpu = worker.gpus.get()
    response = login_as(client, users, "viewer").get(reverse("catalog:gpus", kwargs={"team": "acme"}))
    assert gpu.id.encode() in response.content


@pytest.mark.parametrize("sort,first", [("vram", "AMD Instinct MI300X"), ("name", "AMD")])
def test_gpu_catalog_sorts(client, tenant, users, catalog, sort, first):
    response = login_as(client, users, "viewer").get(reverse("catalog:gpus", kwargs={"team": "acme"}),
                                                     {"sort": sort}, HTTP_HX_REQUEST="true")
    first_row = response.content.split(b"<tbody>")[1].split(b"</tr>")[0]
    assert first.encode() in first_row


def test_gpu_catalog_filters_by_vendor_and_cuda(client, tenant, users, catalog):
    response = login_as(client, users, "viewer").get(reverse("catalog:gpus", kwargs={"team": "acme"}),
                                                     {"vendor": "NVIDIA", "cuda": "13.0"})
    assert b"NVIDIA B200" in response.content and b"AMD Instinct" not in response.content


def test_gpu_catalog_by_price_starts_with_cheapest(client, tenant, users, catalog):
    from catalog.offers import gpu_rows

    cheapest = min((r for r in gpu_rows() if r.usd_per_hour is not None), key=lambda r: r.usd_per_hour)
    response = login_as(client, users, "viewer").get(reverse("catalog:gpus", kwargs={"team": "acme"}), {"sort": "price"})
    assert cheapest.gpu.display_name.encode() in response.content.split(b"<tbody>")[1].split(b"</tr>")[0]


def test_test_endpoint_without_a_key_uses_a_one_off_key_then_deletes_it(client, tenant, users, workload, monkeypatch):
    from accounts.models import DataKey
    from accounts.services import lookup

    seen = {}

    def fake_post(url, **kwargs):
        key = kwargs["headers"]["Authorization"].removeprefix("Bearer ")
        record = lookup(DataKey, key)  # valid during the call, for this workload only
        seen.update(valid=record is not None, covers=record.covers(workload.id), all=record.all_workloads)
        return httpx.Response(200, json={"model": "m", "choices": [{"message": {"content": "Hola!"}}]})

    monkeypatch.setattr(httpx, "post", fake_post)
    response = login_as(client, users, "member").post(reverse("workloads:test", kwargs=_workload_kwargs(tenant, workload)),
                                                      {"api_key": "", "message": "hi"})
    assert b"Hola!" in response.content and seen == {"valid": True, "covers": True, "all": False}
    assert not DataKey.objects.filter(name__startswith="dashboard test").exists()


def test_viewer_must_paste_a_key_to_test(client, tenant, users, workload):
    response = login_as(client, users, "viewer").post(reverse("workloads:test", kwargs=_workload_kwargs(tenant, workload)),
                                                      {"api_key": "", "message": "hi"})
    assert b"paste an ik_live_ key" in response.content
