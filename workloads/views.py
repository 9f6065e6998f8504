"""Dashboard pages for workloads: list, create/edit form with live previews, detail with the
readiness timeline, delete, and a "test endpoint" box that calls the gateway.

One URL, one view, one template serve the full page and its htmx fragment
(`template + "#partial"`); forms post normally so they work without JavaScript.
"""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from pprint import pformat
from zoneinfo import available_timezones

import httpx
from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.models import Role
from accounts.permissions import MANAGE_WORKLOADS, team_view
from accounts.services import data_key_create
from catalog.offers import gpu_rows, project_pool_cost
from workers.models import Replica

from . import services
from . import spec as specs
from .forms import WorkloadForm, loose_values, schedule_preview
from .models import Phase, ReadinessEvent, Workload

PAGE_SIZE = 25
LIST_COLUMNS = ("id", "name", "slug", "model_name", "backend", "task_type", "execution_policy", "phase",
                "message", "desired_replicas", "ready_replicas", "updated_at")
TIMEZONE_COOKIE = "tz"  # set by static/js/app.js from the browser's Intl time zone
GATEWAY_TIMEOUT_S = 60.0
_ZONES = available_timezones()


def _partial(request, template: str, partial: str) -> str:
    return f"{template}#{partial}" if request.htmx and not request.htmx.boosted else template


# --- list -----------------------------------------------------------------------------------------


class WorkloadFilters(forms.Form):
    q = forms.CharField(required=False, label="Search")
    backend = forms.ChoiceField(required=False, choices=[("", "Any backend")] + [(b, b) for b in specs.BUILTIN_BACKENDS],
                                widget=forms.Select(attrs={"aria-label": "Backend"}))
    task_type = forms.ChoiceField(required=False, choices=[("", "Any task")] + [(t, t) for t in specs.TASK_TYPES],
                                  widget=forms.Select(attrs={"aria-label": "Task type"}))
    policy = forms.ChoiceField(required=False, choices=[("", "Any policy"), ("fixed", "Fixed"),
                                                        ("scheduled", "Scheduled"), ("autoscaling", "Autoscaling")],
                               widget=forms.Select(attrs={"aria-label": "Execution policy"}))
    status = forms.ChoiceField(required=False, choices=[("", "Any status")] + list(Phase.choices),
                               widget=forms.Select(attrs={"aria-label": "Status"}))

    def apply(self, qs):
        if not self.is_valid():
            return qs
        d = self.cleaned_data
        if d["q"]:
            qs = qs.filter(Q(name__icontains=d["q"]) | Q(slug__icontains=d["q"]) | Q(model_name__icontains=d["q"]))
        if d["backend"]:
            qs = qs.filter(backend=d["backend"])
        if d["task_type"]:
            qs = qs.filter(task_type=d["task_type"])
        if d["policy"] == "fixed":
            qs = qs.filter(Q(execution_policy="fixed") | Q(execution_policy__isnull=True))  # no policy = fixed
        elif d["policy"]:
            qs = qs.filter(execution_policy=d["policy"])
        if d["status"]:
            qs = qs.filter(phase=d["status"])
        return qs

    @property
    def active(self) -> bool:
        return self.is_valid() and any(self.cleaned_data.values())


@team_view(project=True)
def workload_list(request, project):
    filters = WorkloadFilters(request.GET)
    workloads = filters.apply(Workload.objects.filter(project=project)).only(*LIST_COLUMNS)
    page = Paginator(workloads, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, _partial(request, "workloads/list.html", "table"),
                  {"project": project, "filters": filters, "page": page})


# --- create / edit ----------------------------------------------------------------------------


def user_zone(request) -> str | None:
    zone = request.COOKIES.get(TIMEZONE_COOKIE, "")
    return zone if zone in _ZONES else None


def _form_context(request, form: WorkloadForm, project, workload=None) -> dict:
    sections = form.shown_sections()
    values = loose_values(form)
    ctx = {"form": form, "project": project, "workload": workload, "shown": sections}
    if sections["scheduled"]:
        ctx["preview"] = schedule_preview(form, user_zone(request), timezone.now())
    if sections["cloud"]:
        ctx.update(_pool_context(values))
    return ctx


def _pool_context(values: dict) -> dict:
    cuda = values.get("cuda_version") or ""
    chosen = list(values.get("gpu_pool") or [])
    rows = []
    for row in gpu_rows():
        runs = not cuda or cuda in row.gpu.cuda_versions
        if runs or row.gpu.display_name in chosen:  # a chosen GPU never disappears silently
            rows.append({"row": row, "runs": runs, "checked": row.gpu.display_name in chosen})
    # Chosen GPUs first, then by price: what is in the pool stays in view.
    rows.sort(key=lambda r: (not r["checked"], r["row"].usd_per_hour is None, r["row"].usd_per_hour or 0))
    projection = project_pool_cost(chosen, values.get("min_workers"), values.get("max_workers"),
                                   values.get("max_hourly_cost_usd"), values.get("pool_max_hourly_cost_usd"))
    return {"pool_rows": rows, "projection": projection, "cuda": cuda}


def _unbound(form: WorkloadForm, project, current=None) -> WorkloadForm:
    """The same values as an unbound form: shows the fields for a new backend/policy, judges nothing."""
    unbound = WorkloadForm(project=project, current=current)
    unbound.initial = {name: form[name].value() for name in form.fields}
    unbound.preview_slug(unbound.initial.get("name"))
    return unbound


def _render_form(request, form, project, workload=None, status=200):
    template = _partial(request, "workloads/form.html", "form")
    return render(request, template, _form_context(request, form, project, workload), status=status)


def _save_errors(form: WorkloadForm, exc: Exception) -> None:
    if isinstance(exc, specs.SpecError):
        form.add_spec_errors(exc.errors)  # the world changed since clean(), e.g. a worker went away
    elif isinstance(exc, services.SlugTaken):
        form.add_error("slug", f"slug: a workload {exc} already exists in this project")
    else:
        form.add_error(None, "Someone else changed this workload meanwhile; review and save again.")


@team_view(MANAGE_WORKLOADS, project=True)
def workload_create(request, project):
    if request.method != "POST":
        return _render_form(request, WorkloadForm(project=project, initial={"backend": "vllm"}), project)
    form = WorkloadForm(request.POST, project=project)
    if "_refresh" in request.POST:
        return _render_form(request, _unbound(form, project), project)
    if form.is_valid():
        try:
            workload = services.workload_create(project=project, data=form.wire)
        except (specs.SpecError, services.SlugTaken) as exc:
            _save_errors(form, exc)
        else:
            messages.success(request, f"Workload {workload.name} created; the reconciler is placing it.")
            return redirect("workloads:detail", team=request.team.slug, project=project.slug, slug=workload.slug)
    return _render_form(request, form, project, status=400)


def _workload(project, slug: str) -> Workload:
    return get_object_or_404(Workload.objects.select_related("project"), project=project, slug=slug)


@team_view(MANAGE_WORKLOADS, project=True)
def workload_edit(request, project, slug: str):
    workload = _workload(project, slug)
    current = services.wire_of(workload)
    if request.method != "POST":
        return _render_form(request, WorkloadForm(project=project, current=current), project, workload)
    form = WorkloadForm(request.POST, project=project, current=current)
    if "_refresh" in request.POST:
        return _render_form(request, _unbound(form, project, current), project, workload)
    if form.is_valid():
        if not form.patch:
            messages.info(request, "Nothing changed.")
            return redirect("workloads:detail", team=request.team.slug, project=project.slug, slug=workload.slug)
        try:
            workload = services.workload_update(workload=workload, patch=form.patch)
        except (specs.SpecError, services.SlugTaken, services.Conflict) as exc:
            _save_errors(form, exc)
        else:
            messages.success(request, f"Saved; generation {workload.generation} is being rolled out.")
            return redirect("workloads:detail", team=request.team.slug, project=project.slug, slug=workload.slug)
    return _render_form(request, form, project, workload, status=400)


@require_POST
@team_view(MANAGE_WORKLOADS, project=True)
def schedule_preview_view(request, project):
    form = WorkloadForm(request.POST)
    preview = schedule_preview(form, user_zone(request), timezone.now())
    return render(request, "workloads/form.html#schedule-preview", {"preview": preview})


@require_POST
@team_view(MANAGE_WORKLOADS, project=True)
def pool_preview_view(request, project):
    form = WorkloadForm(request.POST, project=project)
    # Rendered unbound: a preview shows choices and prices, it does not judge the half-filled form.
    return render(request, "workloads/form.html#cloud-pool",
                  {"form": _unbound(form, project), **_pool_context(loose_values(form))})


@team_view(MANAGE_WORKLOADS, project=True)
def workload_delete(request, project, slug: str):
    workload = _workload(project, slug)
    if request.method == "POST":
        services.workload_delete(workload=workload)
        messages.success(request, f"Workload {workload.name} deleted; its replicas are being stopped.")
        return redirect("workloads:list", team=request.team.slug, project=project.slug)
    return render(request, "workloads/delete.html", {"project": project, "workload": workload})


# --- detail ---------------------------------------------------------------------------------------

_SETTLED_REPLICA_STATES = {Replica.State.READY, Replica.State.STOPPED, Replica.State.FAILED}


def _live_context(workload: Workload) -> dict:
    events = list(ReadinessEvent.objects.filter(workload=workload).order_by("-id")[:30])
    replicas = list(workload.replicas.select_related("worker").prefetch_related("gpus").order_by("created_at"))
    settled = (workload.observed_generation == workload.generation
               and workload.phase in (Phase.READY, Phase.STOPPED, Phase.ERROR)
               and all(r.state in _SETTLED_REPLICA_STATES for r in replicas))
    poll_seconds = 15 if settled else 2  # poll fast while something moves, slowly once settled
    scaling = _scaling_context(workload)
    return {
        "workload": workload,
        "timeline": [e for e in reversed(events) if e.generation == workload.generation],
        "events": events[:15],
        "replicas": replicas,
        "poll_seconds": poll_seconds,
        **scaling,
        "live_version": _live_version(workload, events, replicas, poll_seconds, scaling),
    }


def _scaling_context(workload: Workload) -> dict:
    """The autoscaler (persisted state and current demand) and the cloud instances with their price
    and cost so far: what the live section shows for autoscaling workloads."""
    from workers import capacity
    from workers.models import Instance

    from . import autoscaling

    policy = workload.policy or {}
    if policy.get("kind") != "autoscaling":
        return {"autoscaler": None, "instances": [], "cloud": False}
    now = timezone.now()
    rows = list(Instance.objects.filter(workload=workload).select_related("worker").order_by("-created_at")[:20])
    instances = [{"row": r, "cost_usd": r.cost_usd(now), "billed": r.state in Instance.BILLED_STATES} for r in rows]
    return {
        "autoscaler": autoscaling.summary(workload),
        "instances": instances,
        "cloud": capacity.is_cloud(policy),
        "hourly_cost_usd": sum((r["row"].price_usd_per_hour for r in instances if r["billed"]), Decimal(0)),
        "cost_to_date_usd": sum(r["cost_usd"] for r in instances),
    }


def _live_version(workload: Workload, events: list, replicas: list, poll_seconds: int, scaling: dict | None = None) -> str:
    """A digest of everything the live section shows: a poll that would render the same answers 204
    and htmx swaps nothing, so open details, the log's scroll and text selections stay put."""
    shown = [workload.phase, workload.message, workload.generation, workload.observed_generation,
             workload.ready_replicas, workload.desired_replicas, poll_seconds, [e.id for e in events]]
    for r in replicas:
        shown.append([r.id, r.state, r.desired, r.port, r.restarts, r.message, r.log_tail, r.worker_id,
                      r.worker.name if r.worker else None, [g.id for g in r.gpus.all()]])
    scaling = scaling or {}
    shown.append(scaling.get("autoscaler"))
    # Costs to the cent: a running instance's cost grows on every poll.
    shown.append([[i["row"].name, i["row"].state, i["row"].message, round(i["cost_usd"], 2)] for i in scaling.get("instances", [])])
    return hashlib.sha256(json.dumps(shown, default=str).encode()).hexdigest()[:16]


def endpoint_url(workload: Workload) -> str:
    return f"{settings.BASE_URL}/endpoint/{workload.project.slug}/{workload.slug}/v1"


@team_view(project=True)
def workload_detail(request, project, slug: str):
    workload = _workload(project, slug)
    wire = services.wire_of(workload)
    return render(request, "workloads/detail.html", {
        "project": project, **_live_context(workload), "wire_json": json.dumps(wire, indent=2),
        "snippet": sdk_snippet(workload), "endpoint": endpoint_url(workload), "test_form": TestEndpointForm(),
    })


@team_view(project=True)
def workload_live(request, project, slug: str):
    workload = Workload.objects.select_related("project").filter(project=project, slug=slug).first()
    if workload is None:
        # 286 tells htmx to stop polling a workload that is gone.
        return HttpResponse('<p class="empty">This workload was deleted.</p>', status=286)
    ctx = _live_context(workload)
    if request.GET.get("v") == ctx["live_version"]:
        return HttpResponse(status=204)  # unchanged: htmx keeps the section as it is
    return render(request, "workloads/detail.html#live", {"project": project, **ctx})


class TestEndpointForm(forms.Form):
    api_key = forms.CharField(label="API key (ik_live_…)", required=False,
                              widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
                              help_text="Used for this one request; never stored. Leave empty to use a one-off key "
                                        "scoped to this workload, deleted right after the call (members and up).")
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), initial="Say hello in five words.")

    def clean_api_key(self) -> str:
        key = self.cleaned_data["api_key"].strip()
        if key and not key.startswith("ik_live_"):
            raise forms.ValidationError("Paste an API key starting with ik_live_ (API keys page).")
        return key


def call_gateway(workload: Workload, api_key: str, message: str) -> dict:
    """One chat completion through the gateway, as an app would call it: {"reply"} or {"error"}."""
    try:
        response = httpx.post(
            f"{endpoint_url(workload)}/chat/completions",
            json={"model": workload.model_name, "messages": [{"role": "user", "content": message}], "max_tokens": 256},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=GATEWAY_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        return {"error": f"Could not reach the gateway at {settings.BASE_URL}: {exc.__class__.__name__}: {exc}"}
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = (body or {}).get("error") if isinstance(body, dict) else None
        return {"error": f"HTTP {response.status_code}: {detail or response.text[:500]}"}
    try:
        return {"reply": body["choices"][0]["message"]["content"], "model": body.get("model", "")}
    except (KeyError, IndexError, TypeError):
        return {"error": f"Unexpected reply: {response.text[:500]}"}


@require_POST
@team_view(project=True)
def workload_test(request, project, slug: str):
    workload = _workload(project, slug)
    form = TestEndpointForm(request.POST)
    result = None
    if form.is_valid():
        key, one_off = form.cleaned_data["api_key"], None
        if not key and not request.membership.can(Role.MEMBER):
            form.add_error("api_key", "Viewers test with their own key: paste an ik_live_ key.")
        else:
            if not key:
                # A key for this one call: scoped to this workload, short-lived, deleted after use
                # (so the API keys page does not fill up with one-off rows).
                one_off = data_key_create(project=project, name=f"dashboard test by {request.user.email}",
                                          workloads=[workload], created_by=request.user,
                                          expires_at=timezone.now() + timedelta(minutes=2))
                key = one_off.value
            try:
                result = call_gateway(workload, key, form.cleaned_data["message"])
            finally:
                if one_off:
                    one_off.record.delete()
    ctx = {"project": project, "workload": workload, "test_form": form, "result": result}
    if request.htmx:
        return render(request, "workloads/detail.html#test-endpoint", ctx)
    return render(request, "workloads/detail.html", {
        **ctx, **_live_context(workload), "wire_json": json.dumps(services.wire_of(workload), indent=2),
        "snippet": sdk_snippet(workload), "endpoint": endpoint_url(workload)})


# --- SDK snippet ----------------------------------------------------------------------------------


def _kwarg(name: str, value) -> str:
    text = pformat(value, width=96 - len(name), sort_dicts=False)
    return f"    {name}=" + text.replace("\n", "\n" + " " * (len(name) + 5)) + ","


def sdk_snippet(workload: Workload) -> str:
    """Python that declares this workload with the official SDK and calls it."""
    config = workload.config if isinstance(workload.config, dict) else {}
    args = [("name", workload.name), ("slug", workload.slug), ("model", workload.model_name),
            ("backend", workload.backend)]
    optional = [("description", workload.description), ("command", config.get("command")),
                ("vllm_version", config.get("vllm_version")),
                ("task_type", workload.task_type if workload.task_type != "text2text" else None),
                ("execution_policy", workload.execution_policy),
                ("execution_policy_config", workload.execution_policy_config),
                ("worker_id", workload.worker_id), ("gpu_resource_id", workload.gpu_resource_id)]
    args += [(k, v) for k, v in optional if v is not None]
    call = {
        "embedding": 'result = endpoint.embed(input="Hello")\nprint(len(result.embeddings[0]))',
        "reranker": 'result = endpoint.rerank(query="capital of France", documents=["Paris", "Berlin"])\n'
                    "print(result.results[0].index)",
    }.get(workload.task_type, 'result = endpoint.generate_text(prompt="Hello")\nprint(result.text)')
    project = workload.project.slug
    return "\n".join([
        "# export INFERENCEKEY_BASE_URL=" + settings.BASE_URL,
        "# export INFERENCEKEY_SDK_TOKEN=ik_sdk_…   (SDK tokens page)",
        "# export INFERENCEKEY_API_KEY=ik_live_…    (API keys page)",
        "from inferencekey import DataClient, ManagementClient, WorkloadSpec",
        "",
        f'mgmt = ManagementClient.from_env(project="{project}")',
        "ref = mgmt.ensure(WorkloadSpec(",
        *[_kwarg(k, v) for k, v in args],
        "))",
        "",
        f'data = DataClient.from_env(project="{project}")',
        "endpoint = data.endpoint(ref.workload_slug)",
        call,
    ])

