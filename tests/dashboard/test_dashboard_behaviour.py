"""Dashboard behaviour checked without a browser: htmx and expired sessions, the live section's
"unchanged" answer, the autoscaling notice, branded error pages, the theme script's place."""
from __future__ import annotations

import re

from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from workloads import services
from workloads.models import Phase, ReadinessEvent

from ..specs import autoscaling, vllm_spec
from .conftest import login_as


def _live_url(tenant, workload) -> str:
    return reverse("workloads:live", kwargs={"team": tenant.team.slug, "project": tenant.project.slug,
                                              "slug": workload.slug})


def _detail_url(tenant, workload) -> str:
    return reverse("workloads:detail", kwargs={"team": tenant.team.slug, "project": tenant.project.slug,
                                                "slug": workload.slug})


def test_expired_session_htmx_request_gets_hx_redirect_to_login_not_the_login_page(client, tenant, workload):
    page = "http://testserver" + _detail_url(tenant, workload)
    response = client.get(_live_url(tenant, workload), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=page)
    assert response.status_code == 401 and b"<form" not in response.content
    assert response["HX-Redirect"] == "/accounts/login/?next=" + _detail_url(tenant, workload).replace("/", "%2F")


def test_expired_session_plain_request_still_redirects_to_login(client, tenant, workload):
    response = client.get(_detail_url(tenant, workload))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_live_poll_answers_204_while_nothing_changed_and_the_section_after_a_change(client, tenant, users, workload):
    login_as(client, users, "viewer")
    detail = client.get(_detail_url(tenant, workload)).content.decode()
    poll_url = re.search(r'hx-get="([^"]*/live/\?v=[0-9a-f]+)"', detail).group(1)
    assert client.get(poll_url, HTTP_HX_REQUEST="true").status_code == 204
    ReadinessEvent.objects.create(workload=workload, generation=1, phase=Phase.PROVISIONING, message="Placed on box-9")
    changed = client.get(poll_url, HTTP_HX_REQUEST="true")
    assert changed.status_code == 200 and b"Placed on box-9" in changed.content


def test_live_section_gives_logs_and_events_stable_ids_for_keeping_their_state(client, tenant, users, workload, worker):
    from workers.models import Replica

    Replica.objects.create(workload=workload, worker=worker, state=Replica.State.READY, log_tail="hello")
    response = login_as(client, users, "viewer").get(_live_url(tenant, workload))
    text = response.content.decode()
    assert "data-keep-state" in text and 'id="events-details"' in text
    assert re.search(r'<details id="log-details-rep_\w+">', text) and "data-keep-scroll" in text


def test_cloud_autoscaling_workload_detail_has_no_not_reconciled_notice(client, tenant, users, catalog):
    # Cloud autoscaling runs now (capacity providers): the issue-7 stop-gap notice is gone.
    elastic = services.workload_create(project=tenant.project, data=vllm_spec(
        slug="elastic", execution_policy="autoscaling", execution_policy_config=autoscaling()))
    login_as(client, users, "viewer")
    body = client.get(_detail_url(tenant, elastic)).content
    assert b'id="autoscaling-notice"' not in body and b"not reconciled yet" not in body


def test_private_autoscaling_workload_detail_has_no_not_reconciled_notice(client, tenant, users, worker):
    elastic = services.workload_create(project=tenant.project, data=vllm_spec(
        slug="elastic", execution_policy="autoscaling", execution_policy_config={
            "max_workers": 2, "workers": {"source": "private", "private_worker_ids": [worker.id]}}))
    login_as(client, users, "viewer")
    assert b'id="autoscaling-notice"' not in client.get(_detail_url(tenant, elastic)).content


def test_csrf_failure_shows_the_branded_page(tenant, users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["admin"])
    response = client.post(reverse("accounts:sdk_token_create", kwargs={"team": "acme", "project": "demo"}),
                           {"name": "ci"})
    assert response.status_code == 403 and b'id="csrf-failure"' in response.content
    assert b"InferenceKey" in response.content and response["X-Error-Message"]


def test_server_error_page_is_branded(db):
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500 and b'id="server-error"' in response.content
    assert b"css/app.css" in response.content


def test_saved_theme_is_applied_by_a_synchronous_script_before_the_stylesheets(client, tenant, users):
    text = login_as(client, users, "viewer").get(reverse("accounts:team_home", kwargs={"team": "acme"})).content.decode()
    head = text[:text.index("</head>")]
    tag = re.search(r"<script [^>]*js/theme\.js[^>]*>", head).group(0)
    assert "defer" not in tag and "async" not in tag
    assert head.index("js/theme.js") < head.index("stylesheet")
