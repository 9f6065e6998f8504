"""Dashboard pages for workers: register (join token + the agent command), list, detail, drain, delete."""
from __future__ import annotations

import shlex

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db.models import Avg, Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.permissions import MANAGE_WORKERS, team_view

from . import services
from .models import JoinToken, Replica, Worker

JOIN_COMMAND_SESSION_KEY = "issued_join_command"


class RegisterWorkerForm(forms.Form):
    name = forms.CharField(max_length=120, required=False,
                           help_text="Shown in the dashboard; the host name is used when empty.")
    labels = forms.CharField(required=False, help_text="Optional, comma-separated key=value pairs, e.g. rack=a1, zone=lab.")
    accepts_cpu = forms.BooleanField(label="Also run workloads that need no GPU", required=False)

    def clean_labels(self) -> dict:
        labels = {}
        for part in filter(None, (p.strip() for p in self.cleaned_data["labels"].split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError(f"{part!r} is not key=value")
            labels[key.strip()] = value.strip()
        return labels


def _team_worker(request, pk: str) -> Worker:
    return get_object_or_404(Worker, pk=pk, team=request.team)


@team_view()
def worker_list(request):
    workers = (Worker.objects.filter(team=request.team).prefetch_related("gpus")
               .annotate(replica_count=Count("replicas", filter=Q(replicas__desired=True)),
                         utilization=Avg("gpus__utilization_pct")))
    pending = JoinToken.objects.filter(team=request.team, used_at__isnull=True, expires_at__gt=timezone.now())
    shared = Worker.objects.filter(team__isnull=True).prefetch_related("gpus")
    template = "workers/list.html#table" if request.htmx and not request.htmx.boosted else "workers/list.html"
    return render(request, template, {"workers": workers, "pending": pending, "shared": shared})


@never_cache
@team_view(MANAGE_WORKERS)
def worker_register(request):
    form = RegisterWorkerForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"]
        issued = services.join_token_create(team=request.team, name=name, labels=form.cleaned_data["labels"],
                                            accepts_cpu=form.cleaned_data["accepts_cpu"], created_by=request.user)
        command = services.agent_command(server_url=settings.BASE_URL, join_token=issued.value,
                                         name=shlex.quote(name) if name else "")
        # Post/redirect/get: a reload must not mint another join token. The command waits in the
        # session for the redirected GET, which shows it once and forgets it.
        request.session[JOIN_COMMAND_SESSION_KEY] = {"team": request.team.slug, "command": command}
        return redirect("workers:register", team=request.team.slug)
    issued = request.session.get(JOIN_COMMAND_SESSION_KEY)
    if request.method != "POST" and issued and issued.get("team") == request.team.slug:
        del request.session[JOIN_COMMAND_SESSION_KEY]
        response = render(request, "workers/register.html", {"form": form, "command": issued["command"]})
        response["Cache-Control"] = "no-store"  # the join token is in this page, once
        return response
    return render(request, "workers/register.html", {"form": form}, status=400 if form.errors else 200)


@team_view()
def worker_detail(request, pk: str):
    worker = _team_worker(request, pk)
    replicas = (Replica.objects.filter(worker=worker).select_related("workload", "workload__project")
                .prefetch_related("gpus").order_by("-created_at"))
    return render(request, "workers/detail.html", {"worker": worker, "gpus": worker.gpus.all(), "replicas": replicas})


@require_POST
@team_view(MANAGE_WORKERS)
def worker_drain(request, pk: str):
    worker = _team_worker(request, pk)
    services.worker_drain(worker=worker)
    messages.success(request, f"{worker.name} is draining: no new replicas go there; its replicas move elsewhere.")
    return redirect("workers:detail", team=request.team.slug, pk=worker.pk)


@team_view(MANAGE_WORKERS)
def worker_delete(request, pk: str):
    worker = _team_worker(request, pk)
    if request.method == "POST":
        affected = services.worker_delete(worker=worker)
        # The reconciler's periodic sweep reschedules the affected workloads.
        messages.success(request, f"{worker.name} deleted; {len(affected)} workload(s) will be rescheduled.")
        return redirect("workers:list", team=request.team.slug)
    return render(request, "workers/delete.html", {"worker": worker})
