"""The workload form: the bad-spec table gives the same field errors as the API, fields follow
the backend and policy, edits patch only what changed, and the previews render."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse

from workloads import policies
from workloads.forms import WorkloadForm, field_for_path, fields_from_wire, next_transitions, wire_from_fields
from workloads.models import Workload
from workloads.services import spec_context, wire_of
from workloads.spec import WIRE_FIELDS, SpecError, validate

from ..specs import BAD_SPECS, autoscaling, policy, vllm_spec
from .conftest import login_as

IDS = [case for case, _, _ in BAD_SPECS]


def _with_server_defaults(wire: dict) -> dict:
    out = {k: wire.get(k) for k in WIRE_FIELDS} | {k: v for k, v in wire.items() if k not in WIRE_FIELDS}
    out["task_type"] = out["task_type"] or "text2text"
    if out["execution_policy"] is None and out["execution_policy_config"] is None:
        out["execution_policy"], out["execution_policy_config"] = "fixed", {"replicas": 1}
    return out


def _html_round_trip(wire: dict) -> bool:
    """Whether an HTML form post can say exactly what this wire dict says (not a blank slug:
    the form derives it from the name)."""
    if not wire.get("slug"):
        return False
    form = WorkloadForm(data=fields_from_wire(wire))
    return _with_server_defaults(wire_from_fields(form._clean_values(form.data))) == _with_server_defaults(wire)


HTML_ROWS = [row for row in BAD_SPECS if _html_round_trip(row[1])]


@pytest.fixture
def project(tenant, catalog):
    return tenant.project


@pytest.mark.parametrize("case,spec,field", BAD_SPECS, ids=IDS)
def test_bad_spec_through_form_has_the_validator_error_keys(project, case, spec, field):
    with pytest.raises(SpecError) as exc:
        validate(spec, spec_context(project))
    form = WorkloadForm.from_wire(spec, project=project)
    assert not form.is_valid()
    assert set(form.spec_errors) == set(exc.value.errors) and field in form.spec_errors


@pytest.mark.parametrize("case,spec,field", BAD_SPECS, ids=IDS)
def test_bad_spec_error_lands_on_the_field_its_path_names_worded_with_its_label(project, case, spec, field):
    form = WorkloadForm.from_wire(spec, project=project)
    form.is_valid()
    shown_on = field_for_path(field)
    messages = form.errors[shown_on or "__all__"]
    if shown_on is None:  # no field shows it: the path says where it is
        assert any(message.startswith(f"{field}: ") for message in messages)
    else:
        label = str(form.fields[shown_on].label or shown_on.replace("_", " ").capitalize())
        assert any(message.startswith(label) for message in messages)
        assert not any(message.startswith(f"{field}:") for message in messages)


@pytest.mark.parametrize("case,spec,field", HTML_ROWS, ids=[r[0] for r in HTML_ROWS])
def test_bad_spec_posted_as_html_form_marks_its_field_invalid(client, tenant, users, project, case, spec, field):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, fields_from_wire(spec))
    shown_on = field_for_path(field)
    assert response.status_code == 400
    if shown_on is not None:
        assert f'data-field-error="{shown_on}"'.encode() in response.content
    assert not Workload.objects.filter(project=project).exists()


def test_window_error_is_worded_with_the_field_label_not_the_spec_path(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    data = fields_from_wire(vllm_spec(execution_policy="scheduled", execution_policy_config={"window": "nonsense"}))
    response = login_as(client, users, "member").post(url, data)
    text = response.content.decode()
    assert response.status_code == 400 and 'data-field-error="window">Weekly window' in text
    assert "execution_policy_config.window:" not in text
    assert 'id="id_window" aria-invalid="true"' in text or ('aria-invalid="true"' in text and 'href="#id_window"' in text)


def test_blank_slug_is_derived_from_the_name_on_create(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    data = fields_from_wire(vllm_spec(name="Support Bot (EU) v2", slug=""))
    response = login_as(client, users, "member").post(url, data)
    assert response.status_code == 302 and Workload.objects.get(project=project).slug == "support-bot-eu-v2"


def test_blank_slug_keeps_the_stored_slug_on_edit(client, tenant, users, project):
    from workloads import services

    workload = services.workload_create(project=project, data=vllm_spec())
    url = reverse("workloads:edit", kwargs={"team": tenant.team.slug, "project": project.slug, "slug": workload.slug})
    response = login_as(client, users, "member").post(url, fields_from_wire(vllm_spec(name="Renamed", slug="")))
    workload.refresh_from_db()
    assert response.status_code == 302 and (workload.name, workload.slug) == ("Renamed", "support-bot")


def test_slug_field_previews_the_slug_derived_from_the_name(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"name": "Support Bot", "backend": "ollama", "_refresh": "1"})
    assert b'placeholder="support-bot"' in response.content and b'data-slug-source="id_slug"' in response.content


def test_most_bad_specs_are_expressible_as_html_posts():
    assert len(HTML_ROWS) >= 40


@pytest.mark.parametrize("path,field", [
    ("execution_policy_config.workers.cloud_pool.gpu_pool[1]", "gpu_pool"),
    ("execution_policy_config.gpu_pool[0]", "gpu_pool"),
    ("execution_policy_config.workers.private_worker_ids[0]", "private_worker_ids"),
    ("execution_policy_config.workers.cloud_pool.allowed_cuda_versions[0]", "cuda_version"),
    ("config.command", "command"),
    ("execution_policy_config", "execution_policy"),
    ("min_vram_gb", None),
])
def test_error_path_maps_to_form_field(path, field):
    assert field_for_path(path) == field


@pytest.mark.parametrize("wire", [
    vllm_spec(),
    policy("autoscaling", autoscaling()),
    policy("scheduled", {"window": "Mon-Fri 08:00-20:00 Europe/Madrid", "replicas": 2}),
    policy("scheduled", {"cron": "0 2 * * *", "timezone": "UTC", "duration_minutes": 90}),
    vllm_spec(backend="ollama", config=None, execution_policy="fixed", execution_policy_config={"replicas": 3}),
], ids=["vllm", "autoscaling", "window", "cron", "ollama"])
def test_good_spec_survives_form_round_trip(wire):
    form = WorkloadForm(data=fields_from_wire(wire))
    assert _with_server_defaults(wire_from_fields(form._clean_values(form.data))) == _with_server_defaults(wire)


def test_valid_post_creates_workload_and_redirects(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, fields_from_wire(policy("autoscaling", autoscaling())))
    workload = Workload.objects.get(project=project, slug="support-bot")
    assert response.status_code == 302 and workload.policy["gpu_pool"] == ["NVIDIA A100-SXM4-80GB"]


def test_duplicate_slug_is_a_slug_error(client, tenant, users, project, workload):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, fields_from_wire(vllm_spec()))
    assert response.status_code == 400 and b"already exists in this project" in response.content


def test_ollama_form_hides_command_and_vllm_version(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"backend": "ollama", "_refresh": "1"})
    assert b'name="command"' not in response.content and b'name="vllm_version"' not in response.content


def test_vllm_form_shows_command_and_vllm_version(client, tenant, users, project):
    response = login_as(client, users, "member").get(
        reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug}))
    assert b'name="command"' in response.content and b'name="vllm_version"' in response.content


def test_refresh_shows_autoscaling_fields_without_errors(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"backend": "vllm", "execution_policy": "autoscaling", "_refresh": "1"})
    assert b'name="max_hourly_cost_usd"' in response.content and b"NVIDIA H100" in response.content
    assert b"field-error" not in response.content


def test_htmx_refresh_returns_only_the_form(client, tenant, users, project):
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"execution_policy": "scheduled", "_refresh": "1"},
                                                      HTTP_HX_REQUEST="true")
    assert response.content.lstrip().startswith(b'<form id="workload-form"') and b"<html" not in response.content


def test_edit_without_changes_keeps_generation(client, tenant, users, workload):
    url = reverse("workloads:edit", kwargs={"team": tenant.team.slug, "project": tenant.project.slug, "slug": workload.slug})
    login_as(client, users, "member").post(url, fields_from_wire(wire_of(workload)))
    workload.refresh_from_db()
    assert workload.generation == 1 and workload.execution_policy is None


def test_edit_patches_only_changed_fields(client, tenant, users, workload):
    url = reverse("workloads:edit", kwargs={"team": tenant.team.slug, "project": tenant.project.slug, "slug": workload.slug})
    login_as(client, users, "member").post(url, {**fields_from_wire(wire_of(workload)), "name": "Renamed"})
    workload.refresh_from_db()
    assert (workload.name, workload.generation, workload.execution_policy) == ("Renamed", 2, None)


def test_edit_error_keeps_stored_spec(client, tenant, users, workload):
    url = reverse("workloads:edit", kwargs={"team": tenant.team.slug, "project": tenant.project.slug, "slug": workload.slug})
    response = login_as(client, users, "member").post(url, {**fields_from_wire(wire_of(workload)), "replicas": "-1"})
    workload.refresh_from_db()
    assert response.status_code == 400 and workload.generation == 1


def test_schedule_preview_lists_five_transitions(client, tenant, users, project):
    url = reverse("workloads:schedule_preview", kwargs={"team": tenant.team.slug, "project": project.slug})
    client.cookies["tz"] = "Asia/Tokyo"
    response = login_as(client, users, "member").post(url, {"schedule_kind": "window", "window": "Mon-Fri 08:00-20:00 Europe/Madrid"})
    assert response.content.count(b"<li>") == 5 and b"Asia/Tokyo" in response.content


def test_schedule_preview_explains_a_bad_cron(client, tenant, users, project):
    url = reverse("workloads:schedule_preview", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"schedule_kind": "cron", "cron": "61 * * * *"})
    assert b"Cron must be a valid 5-field cron expression" in response.content


@pytest.mark.parametrize("config", [{"cron": "0 2 * * *"}, {"cron": "30 9 * * 1-5", "duration_minutes": 600,
                                                                  "timezone": "Europe/Madrid"}])
def test_fast_cron_transitions_match_the_policy_module(config):
    parsed = policies.parse("scheduled", config)
    now = datetime(2026, 3, 27, 13, 17, 22, tzinfo=UTC)
    assert next_transitions(parsed, now) == policies._scan_transitions(parsed, now, 5)  # fast path == minute scan


def test_pool_preview_filters_by_cuda_and_projects_cost(client, tenant, users, project):
    url = reverse("workloads:pool_preview", kwargs={"team": tenant.team.slug, "project": project.slug})
    data = {"cuda_version": "13.0", "gpu_pool": ["NVIDIA H100 80GB HBM3"], "min_workers": "1", "max_workers": "4"}
    response = login_as(client, users, "member").post(url, data)
    assert b"Projected cost" in response.content and b"AMD" not in response.content


def test_schedule_preview_shows_transitions_in_the_schedules_own_zone(client, tenant, users, project):
    url = reverse("workloads:schedule_preview", kwargs={"team": tenant.team.slug, "project": project.slug})
    response = login_as(client, users, "member").post(url, {"schedule_kind": "window",
                                                              "window": "Mon-Fri 08:00-20:00 Europe/Madrid"})
    text = response.content.decode()
    assert "08:00 Europe/Madrid" in text and "20:00 Europe/Madrid" in text
    assert "07:00" not in text and "19:00" not in text and "06:00" not in text  # not the UTC times


def test_schedule_preview_also_shows_the_viewers_zone_labelled(client, tenant, users, project):
    url = reverse("workloads:schedule_preview", kwargs={"team": tenant.team.slug, "project": project.slug})
    client.cookies["tz"] = "America/New_York"
    with time_machine.travel(datetime(2026, 1, 5, 12, 0, tzinfo=UTC), tick=False):  # winter: Madrid = UTC+1
        response = login_as(client, users, "member").post(url, {"schedule_kind": "window",
                                                                  "window": "Mon-Fri 08:00-20:00 Europe/Madrid"})
    text = response.content.decode()
    assert "Mon 2026-01-05 20:00 Europe/Madrid" in text and "(Mon 2026-01-05 14:00 America/New_York)" in text
