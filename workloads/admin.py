"""Admin for workloads and readiness events. A workload edited here goes through the same
validator (`workloads/spec.py`) and services as the API and the dashboard form, so it gets a
new generation and a reconcile like any other change."""
from __future__ import annotations

from django import forms
from django.contrib import admin

from . import services
from . import spec as specs
from .models import GatewayDemand, ReadinessEvent, Workload


class WorkloadAdminForm(forms.ModelForm):
    class Meta:
        model = Workload
        fields = ["project", *specs.WIRE_FIELDS]

    def clean(self):
        cleaned = super().clean()
        project = cleaned.get("project") or getattr(self.instance, "project", None)
        if project is None:
            return cleaned
        wire = {name: cleaned.get(name) for name in specs.WIRE_FIELDS}
        for name in ("description", "worker_id", "gpu_resource_id", "execution_policy"):
            wire[name] = wire[name] or None  # the admin posts "" for an empty optional field
        try:
            self.spec = specs.validate(wire, services.spec_context(project))
        except specs.SpecError as exc:
            for path, messages in exc.errors.items():
                field = path.split(".")[0].split("[")[0]
                for message in messages:
                    self.add_error(field if field in self.fields else None, f"{path}: {message}")
        return cleaned


class ReadinessEventInline(admin.TabularInline):
    model = ReadinessEvent
    extra = 0
    can_delete = False
    readonly_fields = ["generation", "phase", "step", "message", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-id")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):
    form = WorkloadAdminForm
    list_display = ["slug", "name", "project", "backend", "task_type", "execution_policy", "phase",
                    "ready_replicas", "desired_replicas", "generation", "updated_at"]
    list_filter = ["backend", "task_type", "execution_policy", "phase"]
    search_fields = ["slug", "name", "id", "model_name", "project__slug"]
    list_select_related = ["project", "project__team"]
    readonly_fields = ["id", "policy", "generation", "observed_generation", "phase", "message", "desired_replicas",
                       "ready_replicas", "autoscaler", "created_at", "updated_at", "reconciled_at", "next_transition_at"]
    inlines = [ReadinessEventInline]

    def get_readonly_fields(self, request, obj=None):
        # Moving a workload between projects is not a spec change the services know how to do.
        return [*self.readonly_fields, "project"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        wire = form.spec.wire()
        if change:
            current = Workload.objects.get(pk=obj.pk)
            saved = services.workload_update(workload=current, patch=wire)
        else:
            saved = services.workload_create(project=form.cleaned_data["project"], data=wire)
        obj.pk, obj.generation = saved.pk, saved.generation

    def save_related(self, request, form, formsets, change):
        # The workload row was written by the service (it has no many-to-many fields of its own);
        # the event inline is read-only, so saving it changes nothing.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)


@admin.register(ReadinessEvent)
class ReadinessEventAdmin(admin.ModelAdmin):
    list_display = ["workload", "generation", "phase", "step", "message", "created_at"]
    list_filter = ["phase"]
    search_fields = ["workload__slug", "message"]
    list_select_related = ["workload"]


@admin.register(GatewayDemand)
class GatewayDemandAdmin(admin.ModelAdmin):
    """What each gateway process last published (read-only: the gateways write it every second)."""

    list_display = ["workload_id", "process", "inflight", "held", "last_request_at", "updated_at"]
    search_fields = ["workload_id", "process"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
