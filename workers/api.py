"""SDK reads about capacity: the workers a project's team can use, and the GPU catalog with the
configured provider's prices. Same credentials as the workload routes (an `ik_sdk_` token)."""
from __future__ import annotations

import json
import logging
from decimal import Decimal

from django.conf import settings
from django.db.models import Q
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from accounts.auth import project_for, require_scope, sdk_token_from
from accounts.models import SdkScope
from catalog.models import GpuType

from .models import Instance, Worker

log = logging.getLogger(__name__)

_GPU = inline_serializer("WorkerGpu", {"id": serializers.CharField(), "name": serializers.CharField(),
                                       "vram_gb": serializers.FloatField()}, many=True)
WorkerSchema = inline_serializer("Worker", many=True, fields={
    "id": serializers.CharField(), "name": serializers.CharField(), "state": serializers.CharField(),
    "source": serializers.ChoiceField(choices=["private", "shared", "cloud"]),
    "workload_id": serializers.CharField(allow_null=True), "gpus": _GPU,
    "hourly_cost_usd": serializers.FloatField(),
})
CatalogGpuSchema = inline_serializer("CatalogGpu", many=True, fields={
    "name": serializers.CharField(), "vendor": serializers.CharField(), "vram_gb": serializers.IntegerField(),
    "cuda_versions": serializers.ListField(child=serializers.CharField()),
    "usd_per_hour": serializers.FloatField(allow_null=True),
})
_ERROR = inline_serializer("CapacityError", {"error": serializers.CharField(), "code": serializers.CharField(required=False),
                                              "detail": serializers.CharField(required=False)})
ERRORS = {401: _ERROR, 403: _ERROR, 404: _ERROR}


def json_response(payload) -> HttpResponse:
    return HttpResponse(json.dumps(payload, separators=(",", ":")), content_type="application/json")


def usable_workers(team_id: str):
    """The workers a team can place on: its own (private and its cloud instances) and, where
    sharing is allowed, the team-less shared ones."""
    usable = Q(team_id=team_id) | Q(team__isnull=True) if settings.ALLOW_SHARED_WORKER else Q(team_id=team_id)
    return Worker.objects.filter(usable).prefetch_related("gpus").order_by("name", "id")


def worker_to_wire(worker: Worker, instance: Instance | None) -> dict:
    cloud = worker.kind == Worker.Kind.CLOUD
    return {
        "id": worker.id, "name": worker.name, "state": worker.state,
        "source": "cloud" if cloud else "shared" if worker.team_id is None else "private",
        "workload_id": instance.workload_id if cloud and instance else None,
        "gpus": [{"id": g.id, "name": g.name, "vram_gb": round(g.memory_total_mb / 1024, 1)} for g in worker.gpus.all()],
        # Private and shared hosts are the team's own machines: no hourly price is known for them.
        "hourly_cost_usd": float(instance.price_usd_per_hour) if cloud and instance else 0.0,
    }


class ProjectWorkersView(APIView):
    @extend_schema(operation_id="workers_list", responses={200: WorkerSchema, **ERRORS},
                   summary="The workers the project's team can use (private, shared, cloud), as an array")
    def get(self, request, project: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_READ)
        proj = project_for(token, project)
        workers = list(usable_workers(proj.team_id))
        instances = {i.worker_id: i for i in Instance.objects.filter(worker_id__in=[w.id for w in workers])}
        return json_response([worker_to_wire(w, instances.get(w.id)) for w in workers])


def provider_prices(names: list[str]) -> dict[str, Decimal]:
    """GPU display name → the configured provider's cheapest offer (the price cloud capacity pays)."""
    from .providers import get_provider

    prices: dict[str, Decimal] = {}
    try:
        for offer in get_provider().offers(names, None):
            if offer.spot:
                continue
            if offer.gpu not in prices or offer.usd_per_hour < prices[offer.gpu]:
                prices[offer.gpu] = offer.usd_per_hour
    except Exception as exc:  # a provider whose API is down leaves prices unknown, not a 500
        log.warning("catalog prices: provider %s failed (%s)", settings.CLOUD_PROVIDER, exc)
    return prices


class CatalogGpusView(APIView):
    @extend_schema(operation_id="catalog_gpus", responses={200: CatalogGpuSchema, **ERRORS},
                   summary="The GPU catalog with the configured provider's on-demand price per hour (null: not offered)")
    def get(self, request):
        sdk_token_from(request)  # any active SDK token: the catalog is the same for every project
        gpus = list(GpuType.objects.order_by("vendor", "-vram_gb", "display_name"))
        prices = provider_prices([g.display_name for g in gpus])
        return json_response([
            {"name": g.display_name, "vendor": g.vendor, "vram_gb": g.vram_gb, "cuda_versions": list(g.cuda_versions or []),
             "usd_per_hour": float(prices[g.display_name]) if g.display_name in prices else None}
            for g in gpus
        ])
