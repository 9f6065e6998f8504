"""Workload detail: the autoscaler (demand, target, replicas, capped) and the cloud instances with
their price and cost so far, in the live section."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from workers.models import Instance
from workloads import services
from workloads.models import Workload

from ..specs import vllm_spec
from .conftest import login_as


def _live(client, tenant, workload) -> str:
    url = reverse("workloads:live", kwargs={"team": tenant.team.slug, "project": tenant.project.slug, "slug": workload.slug})
    return client.get(url).content.decode()


def _private(tenant, worker) -> Workload:
    return services.workload_create(project=tenant.project, data=vllm_spec(
        slug="elastic", execution_policy="autoscaling", execution_policy_config={
            "min_workers": 0, "max_workers": 3, "workers": {"source": "private", "private_worker_ids": [worker.id]}}))


def test_detail_shows_the_autoscalers_target_and_whether_it_is_capped(client, tenant, users, worker):
    workload = _private(tenant, worker)
    Workload.objects.filter(pk=workload.pk).update(autoscaler={"target": 2, "desired": 5, "capped": True,
                                                               "reason": "capped by max_workers (3)"})
    page = _live(login_as(client, users, "viewer"), tenant, workload)
    assert 'id="autoscaler"' in page and "2 replicas" in page
    assert "<strong>yes</strong>: capped by max_workers (3)" in page


def test_detail_of_a_fixed_workload_has_no_autoscaler(client, tenant, users, workload):
    page = _live(login_as(client, users, "viewer"), tenant, workload)
    assert 'id="autoscaler"' not in page and 'id="instances"' not in page


def test_detail_lists_instances_with_price_and_cost_so_far(client, tenant, users, worker):
    workload = _private(tenant, worker)
    launched = timezone.now() - timedelta(hours=3)
    Instance.objects.create(name="ik-acme-elastic-1", workload=workload, team=tenant.team, provider="local",
                            gpu_name="NVIDIA L4", price_usd_per_hour=Decimal("0.430"), state=Instance.State.RUNNING,
                            launched_at=launched)
    Instance.objects.create(name="ik-acme-elastic-0", workload=workload, team=tenant.team, provider="local",
                            gpu_name="NVIDIA L4", price_usd_per_hour=Decimal("0.430"), state=Instance.State.TERMINATED,
                            launched_at=launched, terminated_at=launched + timedelta(hours=1))
    page = _live(login_as(client, users, "viewer"), tenant, workload)
    assert "ik-acme-elastic-1" in page and "$0.430/h" in page and "$1.29" in page  # 3 h × $0.43
    assert "Now $0.430/h" in page and "$1.72 so far" in page  # the terminated one's hour counts too


def test_live_version_changes_when_the_autoscaler_decides(client, tenant, users, worker):
    from workloads.views import _live_context

    workload = _private(tenant, worker)
    before = _live_context(Workload.objects.get(pk=workload.pk))["live_version"]
    Workload.objects.filter(pk=workload.pk).update(autoscaler={"target": 3})
    assert _live_context(Workload.objects.get(pk=workload.pk))["live_version"] != before


def _form_post(client, tenant, **fields) -> str:
    url = reverse("workloads:create", kwargs={"team": tenant.team.slug, "project": tenant.project.slug})
    data = {"execution_policy": "autoscaling", "backend": "vllm", "_refresh": "1", "min_workers": "2", "max_workers": "5",
            "gpu_pool": ["NVIDIA L4"], **fields}
    return client.post(url, data).content.decode()


def test_the_form_keeps_min_and_max_workers_when_the_source_changes(client, tenant, users, catalog, worker):
    login_as(client, users, "member")
    for source in ("cloud", "private", "cloud"):
        page = _form_post(client, tenant, worker_source=source)
        assert 'name="min_workers" value="2"' in page and 'name="max_workers" value="5"' in page


def test_the_pool_projection_compares_with_the_smaller_ceiling(client, tenant, users, catalog):
    from catalog.offers import price_by_gpu

    l4 = price_by_gpu()["NVIDIA L4"]
    login_as(client, users, "member")
    roomy = _form_post(client, tenant, worker_source="cloud", max_hourly_cost_usd=str(l4 * 10))
    tight = _form_post(client, tenant, worker_source="cloud", max_hourly_cost_usd=str(l4 * 10),
                       pool_max_hourly_cost_usd=str(l4 * 2))
    useless = _form_post(client, tenant, worker_source="cloud", max_hourly_cost_usd=str(l4 / 2))
    assert "Within the cost ceiling" in roomy
    assert "Above the cost ceiling" in tight and "scaling stops at 2 workers" in tight
    assert "below the cheapest GPU of the pool" in useless
