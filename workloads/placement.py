"""Placement: choose a worker (and GPUs, and a port) for a replica.

Order: the pinned worker / GPU when the spec has one; else an online private worker of the team
(or a shared worker) whose GPU has enough free VRAM for the model's estimate, best fit first;
else a worker registered as CPU-capable. Nothing eligible → a reason the workload shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from workers import capacity
from workers.engines import vram_estimate_mb
from workers.models import Gpu, Replica, Worker

PORT_RANGE = range(20000, 30000)
ACTIVE_STATES = [s for s in Replica.State.values if s not in (Replica.State.STOPPED,)]


@dataclass(frozen=True)
class Placement:
    worker: Worker
    gpus: list[Gpu]
    port: int
    vram_mb: int


class Unplaceable(Exception):
    """Why no worker can take the replica (shown as the workload's message)."""


class NoRoom(Unplaceable):
    """No GPU has room for the replica's estimate: other replicas hold the memory."""


def eligible_workers(team_id: str):
    fresh = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S)
    # Shared (team-less) workers run every team's engines as one OS user: only where allowed.
    usable = Q(team_id=team_id) | Q(team__isnull=True) if settings.ALLOW_SHARED_WORKER else Q(team_id=team_id)
    return (
        Worker.objects.filter(usable, kind=Worker.Kind.PRIVATE,
                              state=Worker.State.ONLINE, last_heartbeat_at__gte=fresh)
        .prefetch_related("gpus")
        .order_by("created_at")
    )


def _reserved_by_gpu(worker: Worker) -> dict[str, int]:
    reserved: dict[str, int] = {}
    rows = Replica.objects.filter(worker=worker, state__in=ACTIVE_STATES).prefetch_related("gpus")
    for replica in rows:
        gpus = list(replica.gpus.all())
        for gpu in gpus:
            reserved[gpu.id] = reserved.get(gpu.id, 0) + replica.vram_mb // max(1, len(gpus))
    return reserved


def free_port(worker: Worker) -> int:
    """A port no replica uses on the worker's host: every worker with the same address (the gateway
    reaches engines at address:port) or hostname shares one port space, whatever agent runs them.
    The agent still bind-tests it (other programs hold ports too) and reports the port it used."""
    same_host = Q(worker=worker) | Q(worker__address=worker.address)
    if worker.hostname:
        same_host |= Q(worker__hostname=worker.hostname)
    used = set(Replica.objects.filter(same_host).exclude(port=None).values_list("port", flat=True))
    for port in PORT_RANGE:
        if port not in used:
            return port
    raise Unplaceable(f"worker {worker.name} has no free port")


def _fit_on(worker: Worker, need_mb: int, pinned_gpu: Gpu | None) -> list[Gpu] | None:
    """GPUs on `worker` that can hold `need_mb`: one GPU (best fit), else all of them together."""
    reserved = _reserved_by_gpu(worker)
    gpus = [pinned_gpu] if pinned_gpu else list(worker.gpus.all())
    free = {g.id: g.memory_total_mb - reserved.get(g.id, 0) for g in gpus}
    single = sorted((g for g in gpus if free[g.id] >= need_mb), key=lambda g: free[g.id])
    if single:
        return [single[0]]
    if not pinned_gpu and len(gpus) > 1 and sum(free.values()) >= need_mb:
        return gpus  # tensor-parallel across the whole host
    return None


def place(workload) -> Placement:
    need = vram_estimate_mb(workload.model_name)
    if capacity.is_cloud(workload.policy):
        return _place_cloud(workload, need)
    team_id = workload.project.team_id
    candidates = list(eligible_workers(team_id))
    pinned_gpu = None
    if workload.gpu_resource_id:
        pinned_gpu = Gpu.objects.select_related("worker").filter(pk=workload.gpu_resource_id).first()
        if pinned_gpu is None:
            raise Unplaceable(f"pinned GPU {workload.gpu_resource_id} no longer exists")
        candidates = [w for w in candidates if w.id == pinned_gpu.worker_id]
        if not candidates:
            raise Unplaceable(f"the worker of pinned GPU {workload.gpu_resource_id} is not online")
    if workload.worker_id:
        candidates = [w for w in candidates if w.id == workload.worker_id]
        if not candidates:
            raise Unplaceable(f"pinned worker {workload.worker_id} is not online")
    policy = workload.policy or {}
    if policy.get("kind") == "autoscaling" and policy.get("source") == "private":
        return _place_spread(workload, candidates, policy.get("private_worker_ids") or [], need, pinned_gpu)
    if not candidates:
        raise Unplaceable("no online worker: register one (Workers page) or start the local agent")
    return HostBook(candidates).place(candidates, need, workload.model_name, pinned_gpu)


class HostBook:
    """What placement needs to know about a set of workers, read in three queries: memory reserved
    per GPU, desired replicas per worker, ports taken per host. `place` records what it hands out,
    so one book places many replicas (the batch reconcile of a cold start) without reading again."""

    def __init__(self, workers: list[Worker]):
        ids = [w.id for w in workers]
        per_replica: dict[str, tuple[int, list[str]]] = {}
        for rid, vram, gpu_id in Replica.objects.filter(worker_id__in=ids, state__in=ACTIVE_STATES).values_list("id", "vram_mb", "gpus"):
            per_replica.setdefault(rid, (vram, []))[1].extend([gpu_id] if gpu_id else [])
        self.reserved: dict[str, int] = {}
        for vram, gpu_ids in per_replica.values():
            for gpu_id in gpu_ids:
                self.reserved[gpu_id] = self.reserved.get(gpu_id, 0) + vram // max(1, len(gpu_ids))
        self.load: dict[str, int] = dict(
            Replica.objects.filter(worker_id__in=ids, desired=True).values("worker_id").annotate(n=Count("id")).values_list("worker_id", "n"))
        # Every worker with the same address or hostname shares one port space (see free_port).
        addresses = {w.address for w in workers}
        hostnames = {w.hostname for w in workers if w.hostname}
        self.ports: dict[tuple[str, str], set[int]] = {}
        rows = (Replica.objects.filter(Q(worker_id__in=ids) | Q(worker__address__in=addresses) | Q(worker__hostname__in=hostnames))
                .exclude(port=None).values_list("worker_id", "worker__address", "worker__hostname", "port"))
        for worker_id, address, hostname, port in rows:
            for key in self._keys(worker_id, address, hostname):
                self.ports.setdefault(key, set()).add(port)

    @staticmethod
    def _keys(worker_id: str, address: str, hostname: str) -> list[tuple[str, str]]:
        return [("w", worker_id), ("a", address)] + ([("h", hostname)] if hostname else [])

    def _port(self, worker: Worker) -> int:
        used = set().union(*(self.ports.get(k, set()) for k in self._keys(worker.id, worker.address, worker.hostname)))
        for port in PORT_RANGE:
            if port not in used:
                return port
        raise Unplaceable(f"worker {worker.name} has no free port")

    def _fit(self, worker: Worker, need_mb: int, pinned_gpu: Gpu | None) -> list[Gpu] | None:
        """GPUs on `worker` that can hold `need_mb`: one GPU (best fit), else all of them together."""
        gpus = [pinned_gpu] if pinned_gpu else list(worker.gpus.all())
        free = {g.id: g.memory_total_mb - self.reserved.get(g.id, 0) for g in gpus}
        single = sorted((g for g in gpus if free[g.id] >= need_mb), key=lambda g: free[g.id])
        if single:
            return [single[0]]
        if not pinned_gpu and len(gpus) > 1 and sum(free.values()) >= need_mb:
            return gpus  # tensor-parallel across the whole host
        return None

    def _take(self, worker: Worker, gpus: list[Gpu], need: int) -> Placement:
        port = self._port(worker)
        for key in self._keys(worker.id, worker.address, worker.hostname):
            self.ports.setdefault(key, set()).add(port)
        for gpu in gpus:
            self.reserved[gpu.id] = self.reserved.get(gpu.id, 0) + need // len(gpus)
        self.load[worker.id] = self.load.get(worker.id, 0) + 1
        return Placement(worker, gpus, port, need)

    def place(self, candidates: list[Worker], need: int, model_name: str, pinned_gpu: Gpu | None = None) -> Placement:
        """Spread: prefer workers running fewer replicas, then GPU placements over CPU ones."""
        ranked = sorted(candidates, key=lambda w: self.load.get(w.id, 0))
        for worker in ranked:
            gpus = self._fit(worker, need, pinned_gpu)
            if gpus:
                return self._take(worker, gpus, need)
        for worker in ranked:
            if worker.accepts_cpu and not pinned_gpu:
                return self._take(worker, [], need)
        if not candidates:
            raise Unplaceable("no online worker: register one (Workers page) or start the local agent")
        raise NoRoom(f"no worker has {need / 1024:.1f} GiB of free GPU memory for {model_name} "
                     "(estimate: parameters × bytes per parameter × 1.2 + 2 GiB)")


def _place_spread(workload, candidates: list[Worker], listed: list[str], need: int, pinned_gpu: Gpu | None) -> Placement:
    """Private autoscaling: one replica of the workload per GPU of the listed workers (or per CPU
    of a CPU-capable worker without GPUs), on the worker running fewest of its replicas."""
    candidates = [w for w in candidates if w.id in listed]
    if not candidates:
        raise Unplaceable("none of the listed private workers is online")
    mine = Replica.objects.filter(workload=workload, state__in=ACTIVE_STATES).exclude(port=None)
    used_gpus = set(mine.exclude(gpus=None).values_list("gpus__id", flat=True))
    on_worker: dict[str, int] = {}
    for worker_id in mine.values_list("worker_id", flat=True):
        on_worker[worker_id] = on_worker.get(worker_id, 0) + 1
    for worker in sorted(candidates, key=lambda w: on_worker.get(w.id, 0)):
        gpus = [g for g in ([pinned_gpu] if pinned_gpu else worker.gpus.all()) if g.id not in used_gpus]
        reserved = _reserved_by_gpu(worker) if gpus else {}
        fits = sorted((g for g in gpus if g.memory_total_mb - reserved.get(g.id, 0) >= need),
                      key=lambda g: g.memory_total_mb - reserved.get(g.id, 0))
        if fits:
            return Placement(worker, [fits[0]], free_port(worker), need)
        if worker.accepts_cpu and not pinned_gpu and not len(worker.gpus.all()) \
                and on_worker.get(worker.id, 0) < max(1, worker.cpu_count):
            return Placement(worker, [], free_port(worker), need)
    raise NoRoom(f"every slot of the listed private workers holds a replica or lacks {need / 1024:.1f} GiB "
                 f"of free GPU memory for {workload.model_name}")


def _place_cloud(workload, need: int) -> Placement:
    """Cloud autoscaling: one replica per instance, on the workers its instances registered as."""
    fresh = timezone.now() - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S)
    taken = Replica.objects.filter(workload=workload, desired=True).exclude(worker=None).values_list("worker_id", flat=True)
    online = list(Worker.objects.filter(instance__workload=workload, kind=Worker.Kind.CLOUD, state=Worker.State.ONLINE,
                                        last_heartbeat_at__gte=fresh).prefetch_related("gpus").order_by("created_at"))
    taken = set(taken)
    for worker in (w for w in online if w.id not in taken):
        gpus = _fit_on(worker, need, None)
        if gpus:
            return Placement(worker, gpus, free_port(worker), need)
    if online:
        # Each instance holds a replica already (a rolling update: the old one goes first) or
        # its GPU is too small.
        raise NoRoom(f"no free cloud instance of this workload has {need / 1024:.1f} GiB of GPU memory for "
                     f"{workload.model_name}")
    raise Unplaceable("waiting for a cloud instance of this workload to register")
