"""The Django admin lists every model, and a workload saved there goes through the spec validator."""
from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.urls import reverse

from ..specs import vllm_spec

DASHBOARD_APPS = ("accounts", "catalog", "workers", "workloads")


@pytest.fixture
def staff(client, db):
    user = get_user_model().objects.create_superuser(username="root@example.com", email="root@example.com", password="x")
    client.force_login(user)
    return client


def test_every_model_is_registered():
    from django.apps import apps

    models = [m for app in DASHBOARD_APPS for m in apps.get_app_config(app).get_models()]
    assert [m for m in models if m not in admin.site._registry] == []


@pytest.mark.parametrize("model", [m for m in admin.site._registry if m._meta.app_label in DASHBOARD_APPS],
                         ids=lambda m: m._meta.label)
def test_changelist_renders_with_search(staff, tenant, workload, worker, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert staff.get(url, {"q": "a"}).status_code == 200


def test_admin_workload_edit_is_validated_by_the_spec(staff, workload):
    url = reverse("admin:workloads_workload_change", args=[quote(workload.pk)])
    data = {**{k: v or "" for k, v in vllm_spec(config=None).items()}, "config": "null", "execution_policy_config": "null"}
    response = staff.post(url, data)
    assert response.status_code == 200 and b"config.command: is required" in response.content


def test_admin_workload_edit_bumps_generation(staff, workload):
    url = reverse("admin:workloads_workload_change", args=[quote(workload.pk)])
    data = {**{k: v for k, v in vllm_spec(name="Renamed").items() if k != "config"},
            "config": '{"command": "vllm serve m"}', "execution_policy_config": "null",
            "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}
    staff.post(url, data)
    workload.refresh_from_db()
    assert (workload.name, workload.generation) == ("Renamed", 2)
