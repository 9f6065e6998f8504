"""SDK reads about capacity: GET /api/projects/{p}/workers, GET /api/catalog/gpus, and the cost
fields of GET /api/workloads/{id}."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from workers.models import Gpu, Instance, Worker
from workloads.services import workload_create

from ..specs import vllm_spec


@pytest.fixture
def fleet(tenant, other_tenant):
    """A private host with a GPU, the shared local worker, a cloud instance of a workload of the
    team, and another team's host (never listed)."""
    box = Worker.objects.create(team=tenant.team, name="box", state=Worker.State.ONLINE)
    Gpu.objects.create(worker=box, index=0, name="NVIDIA L4", memory_total_mb=23034)
    shared = Worker.objects.create(team=None, name="local", state=Worker.State.ONLINE, accepts_cpu=True)
    workload = workload_create(project=tenant.project, data=vllm_spec())
    cloud = Worker.objects.create(team=tenant.team, name="ik-cloud-1", kind=Worker.Kind.CLOUD, state=Worker.State.ONLINE)
    Gpu.objects.create(worker=cloud, index=0, name="NVIDIA L40S", memory_total_mb=46068)
    Instance.objects.create(name="ik-cloud-1", workload=workload, team=tenant.team, provider="fake", gpu_name="NVIDIA L40S",
                            price_usd_per_hour=Decimal("0.790"), state=Instance.State.RUNNING, worker=cloud,
                            launched_at=timezone.now())
    Worker.objects.create(team=other_tenant.team, name="theirs", state=Worker.State.ONLINE)
    return {"box": box, "shared": shared, "cloud": cloud, "workload": workload}


def test_workers_lists_what_the_team_can_use_with_source_and_price(api, tenant, fleet):
    response = api.call("GET", "/api/projects/demo/workers", tenant.sdk_token)
    by_name = {w["name"]: w for w in response.json()}
    assert response.status_code == 200 and set(by_name) == {"box", "local", "ik-cloud-1"}
    assert [by_name[n]["source"] for n in ("box", "local", "ik-cloud-1")] == ["private", "shared", "cloud"]
    assert by_name["ik-cloud-1"]["workload_id"] == fleet["workload"].id and by_name["box"]["workload_id"] is None
    assert (by_name["ik-cloud-1"]["hourly_cost_usd"], by_name["box"]["hourly_cost_usd"]) == (0.79, 0.0)
    gpu = fleet["box"].gpus.get()
    assert by_name["box"]["gpus"] == [{"id": gpu.id, "name": "NVIDIA L4", "vram_gb": 22.5}]
    assert by_name["box"]["id"] == fleet["box"].id and by_name["box"]["state"] == "online"


def test_workers_omit_shared_ones_where_sharing_is_off(api, tenant, fleet, settings):
    settings.ALLOW_SHARED_WORKER = False
    names = {w["name"] for w in api.call("GET", "/api/projects/demo/workers", tenant.sdk_token).json()}
    assert names == {"box", "ik-cloud-1"}


@pytest.mark.parametrize("path", ["/api/projects/demo/workers", "/api/catalog/gpus"])
def test_capacity_routes_take_only_an_sdk_token(api, client, tenant, path):
    assert api.call("GET", path, tenant.api_key).json()["error"] == "wrong_credential_type"
    assert api.call("GET", path, tenant.api_key).status_code == 403
    assert client.get(path).status_code == 401


def test_an_outsiders_token_cannot_list_the_projects_workers(api, tenant, other_tenant, fleet):
    response = api.call("GET", "/api/projects/demo/workers", other_tenant.sdk_token)
    assert (response.status_code, response.json()["error"]) == (403, "project_scope_mismatch")
    assert "box" not in response.content.decode()


def test_catalog_lists_every_gpu_with_the_providers_price(api, tenant, fake):
    from catalog.models import GpuType

    rows = api.call("GET", "/api/catalog/gpus", tenant.sdk_token).json()
    by_name = {r["name"]: r for r in rows}
    assert len(rows) == GpuType.objects.count() and set(rows[0]) == {"name", "vendor", "vram_gb", "cuda_versions", "usd_per_hour"}
    l4 = GpuType.objects.get(display_name="NVIDIA L4")
    assert by_name["NVIDIA L4"] == {"name": "NVIDIA L4", "vendor": l4.vendor, "vram_gb": l4.vram_gb,
                                    "cuda_versions": l4.cuda_versions, "usd_per_hour": float(fake.prices["NVIDIA L4"])}
    unpriced = next(n for n in by_name if n not in fake.prices)
    assert by_name[unpriced]["usd_per_hour"] is None  # the provider does not offer it


def test_catalog_prices_on_the_default_provider_are_the_catalogs_cheapest(api, tenant):
    from catalog.models import GpuType

    rows = {r["name"]: r for r in api.call("GET", "/api/catalog/gpus", tenant.sdk_token).json()}
    gpu = next(g for g in GpuType.objects.prefetch_related("offers") if g.cheapest_offer is not None)
    assert rows[gpu.display_name]["usd_per_hour"] == float(gpu.cheapest_offer.usd_per_hour)


def test_workload_detail_adds_hourly_cost_and_cost_to_date(api, tenant, fleet):
    workload = fleet["workload"]
    Instance.objects.filter(workload=workload).update(launched_at=timezone.now() - timedelta(hours=2))
    with time_machine.travel(timezone.now(), tick=False):
        body = api.call("GET", f"/api/workloads/{workload.id}", tenant.sdk_token).json()
    assert body["hourly_cost_usd"] == 0.79
    assert body["cost_to_date_usd"] == pytest.approx(1.58, abs=0.01)


def test_workload_on_private_workers_costs_nothing(api, tenant):
    created = api.call("POST", "/api/projects/demo/workloads", tenant.sdk_token, vllm_spec(slug="mine")).json()
    body = api.call("GET", f"/api/workloads/{created['id']}", tenant.sdk_token).json()
    assert (body["hourly_cost_usd"], body["cost_to_date_usd"]) == (0.0, 0.0)
    assert "hourly_cost_usd" not in created  # POST and the list keep the SDK's object as it was


def test_workload_detail_is_the_sdks_object_plus_two_numbers(api, tenant, fleet):
    """The SDK's strict parser ignores keys it does not know (SDK_WIRE.md §4.1): the 9 required
    fields keep their types, the additions are numbers."""
    from workloads.wire import workload_to_wire

    body = api.call("GET", f"/api/workloads/{fleet['workload'].id}", tenant.sdk_token).json()
    extra = {k: body.pop(k) for k in ("hourly_cost_usd", "cost_to_date_usd")}
    assert body == workload_to_wire(fleet["workload"].__class__.objects.get(pk=fleet["workload"].pk))
    assert all(isinstance(v, float) for v in extra.values())


def test_outsider_cannot_read_a_workloads_cost(api, tenant, other_tenant, fleet):
    response = api.call("GET", f"/api/workloads/{fleet['workload'].id}", other_tenant.sdk_token)
    assert response.status_code == 404 and "cost" not in response.content.decode()
