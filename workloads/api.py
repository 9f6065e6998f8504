"""Management API the official SDK speaks (SDK_WIRE.md §4): list/create per project,
get/patch/delete per workload. Views parse, call one service, render."""
from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from accounts.auth import project_for, require_scope, sdk_token_from
from accounts.models import SdkScope
from inferencekey_web.lib.api_errors import ApiError, not_found, validation_failed
from workers import capacity

from . import services
from .models import Workload
from .spec import SpecError
from .wire import json_response, project_list_json, workload_to_wire

_WORKLOAD_FIELDS = {
        "id": serializers.CharField(), "project_id": serializers.CharField(), "project_slug": serializers.CharField(),
        "name": serializers.CharField(), "slug": serializers.CharField(), "description": serializers.CharField(allow_null=True),
        "model_name": serializers.CharField(), "backend": serializers.CharField(), "task_type": serializers.CharField(),
        "config": serializers.JSONField(allow_null=True), "execution_policy": serializers.CharField(allow_null=True),
        "execution_policy_config": serializers.JSONField(allow_null=True), "worker_id": serializers.CharField(allow_null=True),
        "gpu_resource_id": serializers.CharField(allow_null=True), "created_at": serializers.DateTimeField(),
        "updated_at": serializers.DateTimeField(), "generation": serializers.IntegerField(),
        "observed_generation": serializers.IntegerField(), "phase": serializers.CharField(), "message": serializers.CharField(),
}
WorkloadSchema = type("Workload", (serializers.Serializer,), _WORKLOAD_FIELDS)
WorkloadDetailSchema = type("WorkloadDetail", (serializers.Serializer,), {
    **_WORKLOAD_FIELDS,
    "hourly_cost_usd": serializers.FloatField(help_text="what its cloud instances cost per hour now (0 on private and shared workers)"),
    "cost_to_date_usd": serializers.FloatField(help_text="what its cloud instances have cost so far: billed time × price"),
})
ErrorSchema = inline_serializer("Error", {"error": serializers.CharField(), "code": serializers.CharField(required=False),
                                          "detail": serializers.CharField(required=False), "fields": serializers.JSONField(required=False)})
ERRORS = {400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema}


def _spec_error(exc: SpecError) -> ApiError:
    return validation_failed(exc.errors)


def _slug_taken(slug: str, project) -> ApiError:
    return ApiError(409, f"workload slug {slug!r} already exists in project {project.slug!r}", code="slug_taken")


class ProjectWorkloadsView(APIView):
    @extend_schema(operation_id="workloads_list", responses={200: WorkloadSchema(many=True), **ERRORS},
                   summary="All workloads of the project, as a plain array (never paginated)")
    def get(self, request, project: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_READ)
        proj = project_for(token, project)
        return HttpResponse(project_list_json(proj.id), content_type="application/json")

    @extend_schema(operation_id="workloads_create", request=OpenApiTypes.OBJECT,
                   responses={201: WorkloadSchema, **ERRORS}, summary="Create a workload")
    def post(self, request, project: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_WRITE)
        proj = project_for(token, project)
        data = request.data
        if isinstance(data, dict) and (data.get("worker_id") is not None or data.get("gpu_resource_id") is not None):
            require_scope(token, SdkScope.ASSIGNMENT_WRITE)
        try:
            workload = services.workload_create(project=proj, data=data)
        except SpecError as exc:
            raise _spec_error(exc) from None
        except services.SlugTaken as exc:
            raise _slug_taken(str(exc), proj) from None
        return json_response(workload_to_wire(workload), status=201)


def costs(workload: Workload) -> dict:
    """Cloud instances are billed (price × run time, workers/capacity.py); private and shared
    workers are the team's own machines and cost 0 here."""
    return {"hourly_cost_usd": round(float(capacity.hourly_cost_usd(workload.id)), 6),
            "cost_to_date_usd": round(capacity.cost_to_date_usd(workload.id), 6)}


def _workload_for(token, ref: str) -> Workload:
    workload = (
        Workload.objects.select_related("project").filter(project=token.project, id=ref).first()
        or Workload.objects.select_related("project").filter(project=token.project, slug=ref).first()
    )
    if workload is None:
        raise not_found(f"workload {ref!r} not found in project {token.project.slug!r}")
    return workload


class WorkloadDetailView(APIView):
    @extend_schema(operation_id="workloads_get", responses={200: WorkloadDetailSchema, **ERRORS},
                   summary="One workload by id or slug, with its current hourly cost and its cost to date")
    def get(self, request, workload: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_READ)
        target = _workload_for(token, workload)
        # Extra keys: the SDK's strict parser ignores what it does not know (SDK_WIRE.md §4.1).
        return json_response({**workload_to_wire(target), **costs(target)})

    @extend_schema(operation_id="workloads_patch", request=OpenApiTypes.OBJECT, responses={200: WorkloadSchema, **ERRORS},
                   summary="Partial update; config and execution_policy_config are replaced whole")
    def patch(self, request, workload: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_WRITE)
        data = request.data
        if isinstance(data, dict) and ("worker_id" in data or "gpu_resource_id" in data):
            require_scope(token, SdkScope.ASSIGNMENT_WRITE)
        target = _workload_for(token, workload)
        try:
            updated = services.workload_update(workload=target, patch=data)
        except SpecError as exc:
            raise _spec_error(exc) from None
        except services.SlugTaken as exc:
            raise _slug_taken(str(exc), target.project) from None
        except services.Conflict as exc:
            raise ApiError(409, str(exc), code="conflict") from None
        return json_response(workload_to_wire(updated))

    @extend_schema(operation_id="workloads_delete", responses={204: OpenApiResponse(description="Deleted"), **ERRORS},
                   summary="Delete a workload; its replicas are stopped")
    def delete(self, request, workload: str):
        token = sdk_token_from(request)
        require_scope(token, SdkScope.WORKLOAD_WRITE)
        services.workload_delete(workload=_workload_for(token, workload))
        return HttpResponse(status=204)
