"""The one validator: every bad spec names its field; good specs normalise as documented."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from accounts.models import Project
from workloads import policies
from workloads.services import spec_context
from workloads.spec import SpecError, merge_patch, validate

from .specs import BAD_SPECS, autoscaling, policy, vllm_spec


@pytest.fixture
def ctx(tenant):
    return spec_context(Project.objects.get(pk=tenant.project.pk))


def test_bad_spec_table_is_large_enough():
    assert len(BAD_SPECS) >= 40
    assert len({case for case, _, _ in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize("case,spec,field", BAD_SPECS, ids=[c for c, _, _ in BAD_SPECS])
def test_bad_spec_names_its_field(ctx, case, spec, field):
    with pytest.raises(SpecError) as exc:
        validate(spec, ctx)
    assert field in exc.value.errors, exc.value.errors


def test_valid_vllm_spec_keeps_config_verbatim(ctx):
    spec = validate(vllm_spec(config={"command": "vllm serve m", "vllm_version": "0.6.3"}), ctx)
    assert spec.config == {"command": "vllm serve m", "vllm_version": "0.6.3"}
    assert spec.policy == {"kind": "fixed", "replicas": 1}


def test_slug_is_canonicalised_like_the_sdk(ctx):
    assert validate(vllm_spec(slug="  Support__Bot v2! "), ctx).slug == "support-bot-v2"


def test_cloud_autoscaling_normalises(ctx):
    spec = validate(policy("autoscaling", autoscaling()), ctx)
    assert spec.policy["source"] == "cloud"
    assert spec.policy["gpu_pool"] == ["NVIDIA A100-SXM4-80GB"]
    assert spec.execution_policy_config == autoscaling()


def test_legacy_root_gpu_pool_is_normalised_but_stored_verbatim(ctx):
    raw = {"min_workers": 0, "max_workers": 2, "max_hourly_cost_usd": 3.0, "gpu_pool": ["NVIDIA L40S"]}
    spec = validate(policy("autoscaling", raw), ctx)
    assert spec.policy["gpu_pool"] == ["NVIDIA L40S"] and spec.policy["source"] == "cloud"
    assert spec.execution_policy_config == raw


def test_unknown_gpu_suggests_close_match(ctx):
    with pytest.raises(SpecError) as exc:
        validate(policy("autoscaling", autoscaling(workers__cloud_pool__gpu_pool=["NVIDIA A100 SXM4 80GB"])), ctx)
    assert "NVIDIA A100-SXM4-80GB" in exc.value.errors["execution_policy_config.workers.cloud_pool.gpu_pool[0]"][0]


def test_min_replicas_points_to_min_workers(ctx):
    with pytest.raises(SpecError) as exc:
        validate(policy("autoscaling", autoscaling(min_replicas=1)), ctx)
    assert "min_workers" in exc.value.errors["execution_policy_config.min_replicas"][0]


def test_policy_change_without_config_drops_old_config():
    current = {"execution_policy": "autoscaling", "execution_policy_config": autoscaling()}
    assert merge_patch(current, {"execution_policy": "fixed"})["execution_policy_config"] is None


@pytest.mark.parametrize("when,active", [
    ("2026-11-30 09:00", True),   # Monday 09:00 Madrid
    ("2026-11-30 07:59", False),
    ("2026-11-30 20:00", False),  # end is exclusive
    ("2026-11-28 12:00", False),  # Saturday
])
def test_window_activity_in_its_zone(when, active):
    parsed = policies.parse("scheduled", {"window": "Mon-Fri 08:00-20:00 Europe/Madrid"})
    now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo("Europe/Madrid"))
    assert policies.schedule_active(parsed, now) is active


def test_overnight_window_belongs_to_its_start_day():
    parsed = policies.parse("scheduled", {"window": "Fri 22:00-06:00 UTC"})
    saturday_early = datetime(2026, 11, 28, 5, 0, tzinfo=ZoneInfo("UTC"))
    sunday_early = datetime(2026, 11, 29, 5, 0, tzinfo=ZoneInfo("UTC"))
    assert policies.schedule_active(parsed, saturday_early)
    assert not policies.schedule_active(parsed, sunday_early)


def test_cron_active_for_its_duration():
    parsed = policies.parse("scheduled", {"cron": "0 2 * * *", "duration_minutes": 30, "replicas": 2})
    at = datetime(2026, 11, 27, 2, 10, tzinfo=ZoneInfo("UTC"))
    assert policies.desired_replicas(parsed, at) == 2
    assert policies.desired_replicas(parsed, at.replace(hour=3)) == 0


def test_next_transitions_alternate():
    parsed = policies.parse("scheduled", {"window": "Mon-Fri 08:00-20:00 UTC"})
    start = datetime(2026, 11, 27, 12, 0, tzinfo=ZoneInfo("UTC"))  # a Friday, inside
    transitions = policies.next_transitions(parsed, start, 3)
    assert [active for _, active in transitions] == [False, True, False]
    assert transitions[1][0] == datetime(2026, 11, 30, 8, 0, tzinfo=ZoneInfo("UTC"))


def test_a_stored_cron_that_never_fires_is_never_active_and_has_no_transitions():
    stored = {"kind": "scheduled", "cron": "0 0 30 2 *", "tz": "UTC", "duration_minutes": 60, "replicas": 1}
    now = datetime(2026, 11, 27, tzinfo=ZoneInfo("UTC"))
    assert policies.desired_replicas(stored, now) == 0
    assert policies.next_transitions(stored, now) == []


def test_a_leap_day_cron_is_accepted():
    assert policies.parse("scheduled", {"cron": "0 0 29 2 *"})["cron"] == "0 0 29 2 *"


def test_autoscaling_math_clamps_to_bounds():
    parsed = {"kind": "autoscaling", "min_workers": 1, "max_workers": 3, "target_inflight_per_replica": 4}
    now = datetime(2026, 11, 27, tzinfo=ZoneInfo("UTC"))
    assert policies.desired_replicas(parsed, now, policies.Load(inflight=0)) == 1
    assert policies.desired_replicas(parsed, now, policies.Load(inflight=9)) == 3
    assert policies.desired_replicas(parsed, now, policies.Load(inflight=100)) == 3
