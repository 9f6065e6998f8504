"""Worker writes: join tokens, registration, heartbeats, drain and delete."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from inferencekey_web.lib import credentials, tasks

from .models import Gpu, Instance, JoinToken, Replica, Worker

JOIN_TOKEN_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class IssuedJoinToken:
    record: JoinToken
    value: str  # shown once


class SharedWorkerRefused(Exception):
    pass


def join_token_create(*, team, name: str = "", labels: dict | None = None, accepts_cpu: bool = False,
                      created_by=None, ttl: timedelta = JOIN_TOKEN_TTL, kind: str = Worker.Kind.PRIVATE) -> IssuedJoinToken:
    """A one-time token an agent trades for worker credentials. `kind` cloud: a capacity provider's
    instance (workers/capacity.py), labelled with its workload and source."""
    if team is None and not settings.ALLOW_SHARED_WORKER:
        raise SharedWorkerRefused(
            "a shared (team-less) worker runs every team's engines as one OS user; it is off under these settings "
            "(set INFERENCEKEY_ALLOW_SHARED_WORKER=1 to opt in)")
    minted = credentials.mint(credentials.JOIN_PREFIX)
    record = JoinToken.objects.create(
        team=team, name=name, labels=labels or {}, accepts_cpu=accepts_cpu, kind=kind, lookup_id=minted.lookup_id,
        secret_hash=minted.secret_hash, created_by=created_by, expires_at=timezone.now() + ttl,
    )
    return IssuedJoinToken(record, minted.value)


def agent_command(*, server_url: str, join_token: str, name: str = "") -> str:
    """The one line an operator runs on the GPU host: it needs only python3 (3.11+) and curl. The
    agent is downloaded from this server (workers/agent_dist.py); the join token goes in the
    environment, not the argv, so `ps` does not show it."""
    server = shlex.quote(server_url.rstrip("/"))
    pyz = shlex.quote(f"{server_url.rstrip('/')}/agent/inferencekey-agent.pyz")
    name_part = f" --name {name}" if name else ""
    return (f"mkdir -p ~/.inferencekey-agent && curl -fsSL {pyz} -o ~/.inferencekey-agent/inferencekey-agent.pyz && "
            f"IK_JOIN_TOKEN={shlex.quote(join_token)} python3 ~/.inferencekey-agent/inferencekey-agent.pyz "
            f"--server {server}{name_part} --state-dir ~/.inferencekey-agent")


def _int(value, default: int = 0) -> int:
    """Agents report numbers; a malformed one (`"[N/A]"`, `"abc"`) is read as `default`, not a 500."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return default


def _text(value) -> str:
    """Agent-reported text as the database can store it: no NUL, lone surrogates replaced."""
    return str(value or "").replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _str(value, limit: int) -> str:
    return _text(value)[:limit]


def _labels(value) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {_str(k, 64): _str(v, 255) for k, v in list(value.items())[:50]}


# What one agent report may list. A real host has at most 16 GPUs and tens of replicas; the bounds
# keep a forged report from holding the database's write lock (30,000 GPUs: 24 s on SQLite).
MAX_GPUS_PER_WORKER = 64
MAX_REPLICAS_PER_REPORT = 256


def report_problem(payload: dict) -> str | None:
    """Why an agent's register/heartbeat payload is refused (a 400 naming the field), or None."""
    gpus = payload.get("gpus")
    if isinstance(gpus, list) and len(gpus) > MAX_GPUS_PER_WORKER:
        return f"gpus: at most {MAX_GPUS_PER_WORKER} GPUs per worker (got {len(gpus)})"
    replicas = payload.get("replicas")
    if isinstance(replicas, list) and len(replicas) > MAX_REPLICAS_PER_REPORT:
        return f"replicas: at most {MAX_REPLICAS_PER_REPORT} replicas per report (got {len(replicas)})"
    return None


class RegistrationRefused(Exception):
    pass


def worker_register(*, join_token: str, payload: dict) -> tuple[Worker, str]:
    """Trade a one-time join token for a worker and its credential (returned once)."""
    parsed = credentials.parse(join_token)
    if not parsed or parsed[0] != credentials.JOIN_PREFIX:
        raise RegistrationRefused("join_token is not an ik_join_ token")
    minted = credentials.mint(credentials.WORKER_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        token = JoinToken.objects.select_for_update().filter(lookup_id=parsed[1]).first()
        if token is None or not credentials.matches(join_token, token.secret_hash):
            raise RegistrationRefused("unknown join token")
        if token.used_at is not None:
            raise RegistrationRefused("this join token was already used; create a new one")
        if token.expires_at and token.expires_at <= now:
            raise RegistrationRefused("this join token has expired; create a new one")
        worker = Worker.objects.create(
            team=token.team,
            kind=token.kind,
            name=token.name or _str(payload.get("name") or payload.get("hostname") or "worker", 120),
            labels={**_labels(payload.get("labels")), **token.labels},
            hostname=_str(payload.get("hostname"), 255),
            address=_str(payload.get("address") or "127.0.0.1", 255),
            accepts_cpu=token.accepts_cpu or (bool(payload.get("cpu_only")) and not payload.get("gpus")),
            cpu_count=_int(payload.get("cpu_count")),
            memory_mb=_int(payload.get("memory_mb")),
            agent_version=_str(payload.get("agent_version"), 32),
            lookup_id=minted.lookup_id,
            secret_hash=minted.secret_hash,
            state=Worker.State.ONLINE,
            last_heartbeat_at=now,
            created_by=token.created_by,
        )
        token.used_at, token.worker = now, worker
        token.save(update_fields=["used_at", "worker"])
        sync_gpus(worker, payload.get("gpus"))
        # A cloud instance's agent: the instance is running now (its workload is placed on it).
        instances = Instance.objects.filter(join_token=token, state__in=[Instance.State.PENDING, Instance.State.PROVISIONING])
        workload_ids = list(instances.exclude(workload=None).values_list("workload_id", flat=True))
        instances.update(worker=worker, state=Instance.State.RUNNING, registered_at=now, message="agent registered")
        for workload_id in workload_ids:
            tasks.send_on_commit("workloads.tasks.reconcile_workload", [workload_id])
    return worker, minted.value


def worker_for_credential(value: str) -> Worker | None:
    parsed = credentials.parse(value)
    if not parsed or parsed[0] != credentials.WORKER_PREFIX:
        return None
    worker = Worker.objects.filter(lookup_id=parsed[1]).first()
    if worker is None or not credentials.matches(value, worker.secret_hash):
        return None
    return worker


def sync_gpus(worker: Worker, gpus) -> None:
    """Upsert the reported GPU inventory by index; GPUs no longer reported are removed."""
    if not isinstance(gpus, list):
        return  # malformed report: keep the inventory we have
    seen = []
    for gpu in gpus:
        if not isinstance(gpu, dict) or _int(gpu.get("index"), -1) < 0:
            continue
        index = _int(gpu.get("index"))
        seen.append(index)
        Gpu.objects.update_or_create(
            worker=worker, index=index,
            defaults={
                "uuid": _str(gpu.get("uuid"), 64), "name": _str(gpu.get("name") or "GPU", 120),
                "memory_total_mb": _int(gpu.get("memory_total_mb")), "memory_used_mb": _int(gpu.get("memory_used_mb")),
                "utilization_pct": _int(gpu.get("utilization_pct")), "driver_version": _str(gpu.get("driver_version"), 32),
                "cuda_version": _str(gpu.get("cuda_version"), 16),
            },
        )
    Gpu.objects.filter(worker=worker).exclude(index__in=seen).delete()


def worker_drain(*, worker: Worker) -> None:
    """Stop placing new replicas here; the reconciler moves its replicas elsewhere."""
    Worker.objects.filter(pk=worker.pk).update(state=Worker.State.DRAINING)


def worker_delete(*, worker: Worker) -> list[str]:
    """Delete a worker. Its replicas keep wanting to run but lose their worker, so the reconciler
    (queued here by task name: workers must not import workloads) places them elsewhere.
    Returns the affected workload ids."""
    with transaction.atomic():
        affected = list(Replica.objects.filter(worker=worker).exclude(workload=None)
                        .values_list("workload_id", flat=True).distinct())
        Replica.objects.filter(worker=worker, desired=False).delete()
        Replica.objects.filter(worker=worker).update(message="its worker was deleted")
        worker.delete()  # replica.worker → NULL
        for workload_id in affected:
            tasks.send_on_commit("workloads.tasks.reconcile_workload", [workload_id])
    return affected


def worker_offline(*, worker: Worker, engines_stopped: bool) -> list[str]:
    """The agent is stopping cleanly (PROTOCOL.md §4): no more placements here. When it stopped
    its engines too, its replicas are marked stopped so the reconciler moves them at once instead
    of after the heartbeat grace. Returns the affected workload ids."""
    with transaction.atomic():
        Worker.objects.filter(pk=worker.pk).update(state=Worker.State.OFFLINE)
        if not engines_stopped:
            return []
        rows = Replica.objects.filter(worker=worker, desired=True).exclude(workload=None)
        affected = sorted(set(rows.values_list("workload_id", flat=True)))
        rows.update(state=Replica.State.STOPPED, message="its worker's agent stopped", pid=None)
        for workload_id in affected:
            tasks.send_on_commit("workloads.tasks.reconcile_workload", [workload_id])
    return affected


def mark_quiet_workers_offline(now) -> int:
    from django.conf import settings

    cutoff = now - timedelta(seconds=settings.WORKER_OFFLINE_AFTER_S)
    quiet = Worker.objects.filter(state=Worker.State.ONLINE, last_heartbeat_at__lt=cutoff)
    # Read first: the beat sweep calls this every few seconds, and a steady sweep writes nothing.
    if not quiet.exists():
        return 0
    return quiet.update(state=Worker.State.OFFLINE)


# Agent-reported replica state → Replica.State
AGENT_STATES = {
    "starting": Replica.State.STARTING, "backoff": Replica.State.STARTING, "ready": Replica.State.READY,
    "unhealthy": Replica.State.UNHEALTHY, "failed": Replica.State.FAILED, "stopping": Replica.State.DRAINING,
    "draining": Replica.State.DRAINING, "stopped": Replica.State.STOPPED,
}


def worker_heartbeat(*, worker: Worker, payload: dict) -> tuple[list[dict], set[str]]:
    """Record a heartbeat; return (the replicas this worker must run, workload ids whose replicas changed)."""
    now = timezone.now()
    changed_workloads: set[str] = set()
    with transaction.atomic():
        fields = {"last_heartbeat_at": now, "agent_version": _str(payload.get("agent_version") or worker.agent_version, 32)}
        if worker.state in (Worker.State.OFFLINE, Worker.State.PENDING):
            fields["state"] = Worker.State.ONLINE
        Worker.objects.filter(pk=worker.pk).update(**fields)
        if "gpus" in payload:
            sync_gpus(worker, payload.get("gpus"))
        replicas = payload.get("replicas")
        reported = {r.get("id"): r for r in (replicas if isinstance(replicas, list) else []) if isinstance(r, dict)}
        rows = {r.id: r for r in Replica.objects.filter(pk__in=list(reported), worker=worker)}
        for replica_id, report in reported.items():
            row = rows.get(replica_id)
            if row is None:
                continue
            state = AGENT_STATES.get(str(report.get("state")), row.state)
            if state == Replica.State.STOPPED and not row.desired:
                row.delete()  # the agent confirmed the stop: GPUs and port are free again
                if row.workload_id:
                    changed_workloads.add(row.workload_id)  # a replica waiting for that room is placed now
                continue
            if not row.desired and state != Replica.State.STOPPED:
                state = Replica.State.DRAINING
            update = {
                "state": state, "pid": _int(report.get("pid"), None) or None, "restarts": _int(report.get("restarts")),
                "message": _str(report.get("message"), 500), "log_tail": _text(report.get("log_tail"))[-8192:],
            }
            if state == Replica.State.READY and row.state != Replica.State.READY:
                update["ready_at"] = now
            port = _int(report.get("port"), None)
            if (port is not None and 0 < port < 65536 and port != row.port and "port" in (row.launch or {})
                    and report.get("spec_hash") == row.spec_hash):
                # The agent found the placement's port taken on its host and moved the engine
                # (PROTOCOL.md §3): route to where it really listens. (Rows placed before the launch
                # carried its own `port` keep theirs: the agent would not know what to substitute.)
                update["port"] = port
            if row.state != state or row.message != update["message"]:
                if row.workload_id:
                    changed_workloads.add(row.workload_id)
            Replica.objects.filter(pk=row.pk).update(**update)
        # Undesired replicas the agent no longer reports are gone from the host.
        Replica.objects.filter(worker=worker, desired=False).exclude(pk__in=list(reported)).filter(
            updated_at__lt=now - timedelta(seconds=5)).delete()
    # `port` is the one argv/env were rendered with (launch["port"]); the agent substitutes the
    # port it really uses and reports that one back.
    if worker.team_id is None and not settings.ALLOW_SHARED_WORKER:
        return [], changed_workloads  # a shared worker registered before sharing was turned off runs nothing
    # Only the replicas placed on this worker: a worker's credential never sees another's launch orders.
    desired = [
        {"id": r.id, "spec_hash": r.spec_hash, "port": r.port, **r.launch}
        for r in Replica.objects.filter(worker=worker, desired=True).exclude(port=None).order_by("created_at")
    ]
    return desired, changed_workloads
