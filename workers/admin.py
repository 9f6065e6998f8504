"""Admin for workers, their GPUs, join tokens, replicas and cloud instances (credential hashes are never shown)."""
from __future__ import annotations

from django.contrib import admin

from .models import Gpu, Instance, JoinToken, Replica, Worker


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    readonly_fields = ["id", "updated_at"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "team", "kind", "state", "hostname", "last_heartbeat_at", "agent_version"]
    list_filter = ["kind", "state", "accepts_cpu", "provider"]
    search_fields = ["name", "id", "hostname", "team__slug"]
    list_select_related = ["team"]
    readonly_fields = ["id", "lookup_id", "last_heartbeat_at", "created_at", "created_by"]
    exclude = ["secret_hash"]
    inlines = [GpuInline]


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "index", "worker", "memory_total_mb", "memory_used_mb", "utilization_pct", "cuda_version"]
    list_filter = ["name", "cuda_version"]
    search_fields = ["id", "name", "uuid", "worker__name"]
    list_select_related = ["worker"]


@admin.register(JoinToken)
class JoinTokenAdmin(admin.ModelAdmin):
    list_display = ["__str__", "team", "name", "created_by", "created_at", "expires_at", "used_at", "worker"]
    list_filter = ["used_at", "expires_at"]
    search_fields = ["lookup_id", "name", "team__slug"]
    list_select_related = ["team", "created_by", "worker"]
    exclude = ["secret_hash"]
    readonly_fields = ["lookup_id", "created_at", "used_at", "worker", "created_by"]

    def has_add_permission(self, request):
        return False  # minted by the dashboard, which shows the token once


@admin.register(Replica)
class ReplicaAdmin(admin.ModelAdmin):
    list_display = ["id", "workload", "worker", "state", "desired", "generation", "port", "restarts", "updated_at"]
    list_filter = ["state", "desired"]
    search_fields = ["id", "workload__slug", "worker__name", "message"]
    list_select_related = ["workload", "worker"]
    readonly_fields = ["id", "created_at", "updated_at", "ready_at"]
    filter_horizontal = ["gpus"]


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    """Read-only: instances are the capacity converger's (workers/capacity.py); a row changed here
    would disagree with the provider."""

    list_display = ["name", "workload", "provider", "gpu_name", "price_usd_per_hour", "state", "launched_at",
                    "registered_at", "terminated_at"]
    list_filter = ["provider", "state", "gpu_name"]
    search_fields = ["name", "workload__slug", "message"]
    list_select_related = ["workload", "worker"]
    exclude = ["join_token"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
