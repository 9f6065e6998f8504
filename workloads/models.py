"""Workloads (desired state) and their readiness timeline."""
from __future__ import annotations

from django.db import models

from inferencekey_web.lib.ids import new_workload_id
from inferencekey_web.lib.sealing import SealedJSONField


class Phase(models.TextChoices):
    """Readiness phases, the ones the SDK's wait_until_ready understands, plus our own."""

    SCHEDULING = "scheduling", "Scheduling"
    PROVISIONING = "provisioning", "Provisioning"
    BOOTSTRAPPING = "bootstrapping", "Bootstrapping"
    READY = "ready", "Ready"
    ERROR = "error", "Error"
    STOPPED = "stopped", "Stopped"  # zero replicas wanted (fixed 0, outside a schedule window)
    PENDING = "pending", "Not yet reconciled"


# Spec not yet observed, or a phase that still moves (reconcile.lagging_workloads reads this).
UNSETTLED = models.Q(observed_generation__lt=models.F("generation")) | ~models.Q(
    phase__in=[Phase.READY, Phase.STOPPED, Phase.ERROR, Phase.PENDING])


class Workload(models.Model):
    """A declared inference workload. Wire fields are stored exactly as received.

    `config` and `execution_policy_config` keep the client's JSON verbatim (the SDK compares them
    as whole objects); the validated, normalised policy lives in `policy`.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_workload_id, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="workloads")
    name = models.CharField(max_length=120)
    slug = models.CharField(max_length=63)
    description = models.TextField(null=True, blank=True)
    model_name = models.CharField(max_length=255)
    backend = models.CharField(max_length=63)
    task_type = models.CharField(max_length=32, default="text2text")
    config = SealedJSONField(null=True, blank=True)  # encrypted at rest: commands carry HF_TOKEN=… and the like
    execution_policy = models.CharField(max_length=16, null=True, blank=True)
    execution_policy_config = models.JSONField(null=True, blank=True)
    worker_id = models.CharField(max_length=32, null=True, blank=True)
    gpu_resource_id = models.CharField(max_length=32, null=True, blank=True)

    policy = models.JSONField(default=dict)  # normalised policy (see workloads/policies.py)
    generation = models.PositiveIntegerField(default=1)
    observed_generation = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.PENDING)
    message = models.CharField(max_length=500, blank=True)
    desired_replicas = models.PositiveIntegerField(default=0)
    ready_replicas = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    # Scheduled policies: when the schedule next opens or closes (policies.next_change). The beat
    # sweep reconciles a settled workload only once this has come, so a steady sweep reads one index.
    next_transition_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Autoscaling: the autoscaler's persisted state (workloads/autoscaler.py State.dump(); `target`
    # is the replica count reconcile runs).
    autoscaler = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="uniq_workload_slug_per_project")]
        indexes = [
            models.Index(fields=["project", "created_at"]),
            # The beat sweep's "not settled" read: a partial index holds only the few such rows, so
            # a steady sweep does not scan every workload (the query repeats this condition).
            models.Index(fields=["id"], name="workload_unsettled", condition=UNSETTLED),
        ]

    def __str__(self) -> str:
        return self.slug


class ReadinessEvent(models.Model):
    """One step of a workload's way to ready; replayed and followed by the SSE endpoint."""

    workload = models.ForeignKey(Workload, on_delete=models.CASCADE, related_name="events")
    generation = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=16, choices=Phase.choices)
    step = models.CharField(max_length=32, blank=True)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.workload_id} {self.phase}: {self.message}"


class GatewayDemand(models.Model):
    """One gateway process's demand for one workload, on the embedded default (Redis holds it when
    configured; workloads/demand.py). Each process updates its rows at most about once a second from
    a background task, never on the request path; readers sum the fresh rows and ignore stale ones
    (a process that died simply stops refreshing)."""

    process = models.CharField(max_length=40)
    workload_id = models.CharField(max_length=32)
    inflight = models.PositiveIntegerField(default=0)
    held = models.PositiveIntegerField(default=0)
    last_request_at = models.FloatField(null=True, blank=True)  # epoch seconds
    updated_at = models.FloatField()  # epoch seconds

    class Meta:
        constraints = [models.UniqueConstraint(fields=["process", "workload_id"], name="uniq_demand_per_process")]
        indexes = [models.Index(fields=["workload_id"])]
