"""The official SDK, unchanged, against a live server: ensure (all on_drift modes) and delete."""
from __future__ import annotations

import pytest
from inferencekey import ApiError, ManagementClient, PermissionDenied, ValidationError, WorkloadSpec

from accounts import services
from accounts.models import SdkToken
from workloads.models import Workload

pytestmark = pytest.mark.django_db(transaction=True)


def make_spec(**overrides) -> WorkloadSpec:
    fields = dict(
        name="Support Bot",
        slug="support-bot",
        model="meta-llama/Llama-3.1-8B-Instruct",
        backend="vllm",
        command="vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192",
    )
    fields.update(overrides)
    return WorkloadSpec(**fields)


@pytest.fixture
def mgmt(live_server, tenant):
    return ManagementClient(base_url=live_server.url, sdk_token=tenant.sdk_token, project=tenant.project.slug)


def test_ensure_creates_the_workload(mgmt, tenant):
    ref = mgmt.ensure(make_spec())
    workload = Workload.objects.get(project=tenant.project, slug="support-bot")
    assert (ref.project_slug, ref.workload_slug) == ("demo", "support-bot")
    assert workload.config == {"command": "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192"}
    assert workload.generation == 1


def test_second_ensure_of_same_spec_changes_nothing(mgmt):
    spec = make_spec(vllm_version="0.6.3", execution_policy="fixed", execution_policy_config={"replicas": 2})
    mgmt.ensure(spec)
    before = Workload.objects.values("updated_at", "generation").get(slug="support-bot")
    mgmt.ensure(spec)
    assert Workload.objects.values("updated_at", "generation").get(slug="support-bot") == before


def test_reconcile_patches_only_what_changed(mgmt):
    mgmt.ensure(make_spec(description="first"))
    mgmt.ensure(make_spec(description="second", command="vllm serve meta-llama/Llama-3.1-8B-Instruct"))
    workload = Workload.objects.get(slug="support-bot")
    assert workload.description == "second"
    assert workload.config == {"command": "vllm serve meta-llama/Llama-3.1-8B-Instruct"}
    assert workload.name == "Support Bot" and workload.generation == 2


def test_fail_raises_on_drift_without_writing(mgmt):
    mgmt.ensure(make_spec())
    with pytest.raises(ApiError, match="drifted from spec: name"):
        mgmt.ensure(make_spec(name="Renamed"), on_drift="fail")
    assert Workload.objects.get(slug="support-bot").name == "Support Bot"


@pytest.mark.parametrize("mode", ["warn", "ignore", "dry_run"])
def test_non_reconciling_modes_leave_the_server_alone(mgmt, mode):
    mgmt.ensure(make_spec())
    before = Workload.objects.values("name", "updated_at", "generation").get(slug="support-bot")
    ref = mgmt.ensure(make_spec(name="Renamed"), on_drift=mode)
    assert ref.workload_slug == "support-bot"
    assert Workload.objects.values("name", "updated_at", "generation").get(slug="support-bot") == before


def test_dry_run_does_not_create(mgmt):
    mgmt.ensure(make_spec(), on_drift="dry_run")
    assert not Workload.objects.filter(slug="support-bot").exists()


def test_delete_returns_true_then_false(mgmt):
    mgmt.ensure(make_spec())
    assert mgmt.delete("support-bot") is True
    assert mgmt.delete("support-bot") is False
    assert not Workload.objects.filter(slug="support-bot").exists()


def test_policy_switch_carries_its_config(mgmt):
    mgmt.ensure(make_spec(execution_policy="fixed", execution_policy_config={"replicas": 1}))
    config = {"cron": "0 2 * * *"}
    mgmt.ensure(make_spec(execution_policy="scheduled", execution_policy_config=config))
    workload = Workload.objects.get(slug="support-bot")
    assert (workload.execution_policy, workload.execution_policy_config) == ("scheduled", config)
    assert workload.policy["kind"] == "scheduled"


def test_invalid_spec_raises_validation_error_naming_field(mgmt):
    with pytest.raises(ValidationError, match="config.command"):
        mgmt.ensure(make_spec(command=None))


def test_non_canonical_slug_round_trips(mgmt):
    ref = mgmt.ensure(make_spec(slug="Support Bot"))
    assert ref.workload_slug == "support-bot"
    mgmt.ensure(make_spec(slug="Support Bot"))
    assert Workload.objects.filter(slug="support-bot").count() == 1


def test_data_key_on_management_api_is_wrong_credential_type(live_server, tenant):
    client = ManagementClient(base_url=live_server.url, sdk_token=tenant.api_key, project="demo")
    with pytest.raises(PermissionDenied, match=r"\[wrong_credential_type\]"):
        client.ensure(make_spec())


def test_token_of_another_project_is_scope_mismatch(live_server, tenant, other_tenant):
    client = ManagementClient(base_url=live_server.url, sdk_token=other_tenant.sdk_token, project="demo")
    with pytest.raises(PermissionDenied, match=r"\[project_scope_mismatch\]"):
        client.ensure(make_spec())


def test_read_only_token_cannot_write(live_server, tenant):
    token = services.sdk_token_create(project=tenant.project, scopes=["workload:read"]).value
    client = ManagementClient(base_url=live_server.url, sdk_token=token, project="demo")
    with pytest.raises(PermissionDenied, match=r"\[scope_insufficient\]"):
        client.ensure(make_spec())


def test_revoked_token_is_refused_at_once(live_server, tenant, mgmt):
    mgmt.ensure(make_spec())
    services.credential_revoke(credential=SdkToken.objects.get(project=tenant.project))
    with pytest.raises(PermissionDenied, match="authentication failed"):
        mgmt.ensure(make_spec())


def test_unknown_token_is_401(live_server):
    client = ManagementClient(base_url=live_server.url, sdk_token="ik_sdk_00000000_" + "0" * 64, project="demo")
    with pytest.raises(PermissionDenied, match="authentication failed"):
        client.delete("x")


@pytest.mark.parametrize("raw", ["Café Bot", "ÜBER-model", "a__b", "--X--", "日本語 bot", "v1.2_beta"])
def test_server_slugs_match_the_sdks_canonical_form(mgmt, raw):
    from inferencekey_web.lib.slugs import canonical_slug

    ref = mgmt.ensure(make_spec(slug=raw))
    assert ref.workload_slug == canonical_slug(raw)
    assert Workload.objects.filter(slug=canonical_slug(raw)).count() == 1
    mgmt.ensure(make_spec(slug=raw))  # found again: no duplicate
    assert Workload.objects.count() == 1
