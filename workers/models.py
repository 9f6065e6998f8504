"""Workers (GPU hosts running the agent), their GPUs, join tokens, and replicas.

A replica row is the unit of desired state the agent pulls: it carries the rendered launch
recipe (argv, env, port, health path), so the agent protocol never needs the workload model.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from inferencekey_web.lib.ids import new_gpu_id, new_replica_id, new_worker_id
from inferencekey_web.lib.sealing import SealedJSONField


class Worker(models.Model):
    class Kind(models.TextChoices):
        PRIVATE = "private", "Private"
        CLOUD = "cloud", "Cloud"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"
        DRAINING = "draining", "Draining"

    id = models.CharField(primary_key=True, max_length=32, default=new_worker_id, editable=False)
    # No team: a shared worker every team may use (the one-machine default registers its local agent so).
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="workers")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PRIVATE)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    labels = models.JSONField(default=dict, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=255, default="127.0.0.1")  # where the gateway reaches engines
    accepts_cpu = models.BooleanField(default=False)  # runs workloads that fit no GPU (one-machine default)
    cpu_count = models.PositiveIntegerField(default=0)
    memory_mb = models.PositiveIntegerField(default=0)
    agent_version = models.CharField(max_length=32, blank=True)
    lookup_id = models.CharField(max_length=8, unique=True, null=True, blank=True)
    secret_hash = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=32, blank=True)  # cloud workers: provider name
    provider_instance_id = models.CharField(max_length=128, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Gpu(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_gpu_id, editable=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveIntegerField()
    uuid = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=120)
    memory_total_mb = models.PositiveIntegerField(default=0)
    memory_used_mb = models.PositiveIntegerField(default=0)
    utilization_pct = models.PositiveIntegerField(default=0)
    driver_version = models.CharField(max_length=32, blank=True)
    cuda_version = models.CharField(max_length=16, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["worker", "index"]
        constraints = [models.UniqueConstraint(fields=["worker", "index"], name="uniq_gpu_index_per_worker")]

    def __str__(self) -> str:
        return f"{self.name} #{self.index} ({self.id})"


class JoinToken(models.Model):
    """One-time token traded by an agent for worker credentials."""

    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="join_tokens")
    name = models.CharField(max_length=120, blank=True)  # the worker name to use, if given
    labels = models.JSONField(default=dict, blank=True)
    lookup_id = models.CharField(max_length=8, unique=True)
    secret_hash = models.CharField(max_length=64)
    accepts_cpu = models.BooleanField(default=False)
    kind = models.CharField(max_length=16, choices=Worker.Kind.choices, default=Worker.Kind.PRIVATE)  # of the worker it registers
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    used_at = models.DateTimeField(null=True, blank=True)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"ik_join_{self.lookup_id}…"


class Replica(models.Model):
    """One engine process of a workload on a worker."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # wanted, no worker yet
        PLACED = "placed", "Placed"  # worker chosen, agent has not reported it
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        UNHEALTHY = "unhealthy", "Unhealthy"
        DRAINING = "draining", "Draining"  # no longer wanted; the agent is stopping it
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    id = models.CharField(primary_key=True, max_length=32, default=new_replica_id, editable=False)
    workload = models.ForeignKey("workloads.Workload", null=True, blank=True, on_delete=models.SET_NULL, related_name="replicas")
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="replicas")
    gpus = models.ManyToManyField(Gpu, blank=True, related_name="replicas")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    desired = models.BooleanField(default=True)  # False: the agent must stop it, then the row goes
    generation = models.PositiveIntegerField(default=0)  # the workload generation it was rendered for
    # {backend, argv, env, health_path, api_base, warmup, vllm_version}; argv and env (the workload's
    # secrets) are encrypted at rest, the rest stays readable to the gateway's route query.
    launch = SealedJSONField(default=dict, sealed_keys=("argv", "env"))
    spec_hash = models.CharField(max_length=64, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    vram_mb = models.PositiveIntegerField(default=0)  # the placement estimate it reserves
    pid = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    log_tail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["worker", "desired"]), models.Index(fields=["workload", "state"])]

    def __str__(self) -> str:
        return self.id


class Instance(models.Model):
    """A machine a capacity provider runs for a cloud autoscaling workload (workers/providers/).

    The provider only makes machines appear and disappear; this row is the state: which offer,
    at what price, since when, and which worker its agent registered as. Rows stay after
    termination (cost history); `workload` goes NULL when the workload is deleted."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # row written, launch not yet confirmed by the provider
        PROVISIONING = "provisioning", "Provisioning"  # provider accepted it; agent not registered yet
        RUNNING = "running", "Running"  # its agent registered as a worker
        TERMINATING = "terminating", "Terminating"  # wanted gone; still billed until confirmed
        TERMINATED = "terminated", "Terminated"
        FAILED = "failed", "Failed"  # launch refused (capacity, quota) or the machine died

    BILLED_STATES = (State.PENDING, State.PROVISIONING, State.RUNNING, State.TERMINATING)

    name = models.CharField(max_length=63, unique=True)  # the provider's idempotency key (DNS-1123)
    workload = models.ForeignKey("workloads.Workload", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="instances")
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=32)
    gpu_name = models.CharField(max_length=120)  # catalog display name of the offer
    offer = models.JSONField(default=dict, blank=True)  # the provider's offer as launched
    price_usd_per_hour = models.DecimalField(max_digits=8, decimal_places=3)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    message = models.CharField(max_length=500, blank=True)
    capacity_error = models.BooleanField(default=False)  # failed for lack of capacity: try the next GPU
    join_token = models.ForeignKey(JoinToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    worker = models.OneToOneField(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="instance")
    created_at = models.DateTimeField(auto_now_add=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["workload", "state"]), models.Index(fields=["state"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.gpu_name}, {self.state})"

    def cost_usd(self, now) -> float:
        """What it has cost so far: price × billed time (launch to termination, or now); a launch
        the provider refused cost nothing."""
        if self.state == self.State.FAILED:
            return 0.0
        start = self.launched_at or self.created_at
        end = self.terminated_at or now
        if start is None or end <= start:
            return 0.0
        return float(self.price_usd_per_hour) * (end - start).total_seconds() / 3600
