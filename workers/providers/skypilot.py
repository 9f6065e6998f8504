"""`skypilot` provider: an instance is one SkyPilot cluster (20+ clouds, Kubernetes and SSH pools,
spot and failover) whose run command downloads the agent zipapp from this server and starts it.

Optional: `pip install 'inferencekey-selfhosted[skypilot]'` beside the Celery worker, then `sky check`
with the clouds' credentials (README "Cloud capacity"). The catalog's `skypilot_name` column maps a
pool's display names to SkyPilot accelerator names (`NVIDIA A100-SXM4-80GB` → `A100-80GB`); GPUs
without one are not offered. `terminate` is `sky down` (waited for: until it returns, the instance
still counts against the cost ceiling).
"""
from __future__ import annotations

import shlex

from .base import (
    FAILED,
    MANAGED,
    MANAGED_LABEL,
    PENDING,
    RUNNING,
    CapacityError,
    InstanceInfo,
    LaunchSpec,
    Offer,
    ProviderError,
    matches,
)
from .prices import catalog_offers

AGENT_HOME = "~/.inferencekey-agent"


def run_script(labels: dict) -> str:
    """The cluster's run command: fetch the agent zipapp from the server, run it in the foreground.
    The gateway reaches engines at the VM's first address unless IK_ADDRESS is set."""
    label_args = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in sorted(labels.items()))
    return "\n".join([
        "set -e",
        f"mkdir -p {AGENT_HOME}",
        "python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "
        f'"$IK_SERVER/agent/inferencekey-agent.pyz" {AGENT_HOME}/agent.pyz',
        'export IK_ADDRESS="${IK_ADDRESS:-$(hostname -I | awk \'{print $1}\')}"',
        f'exec python3 {AGENT_HOME}/agent.pyz --server "$IK_SERVER" --name "$IK_WORKER_NAME" '
        f"--state-dir {AGENT_HOME} --stop-engines-on-exit {label_args}".strip(),
    ])


def task_config(name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> dict:
    """The SkyPilot task (YAML as a dict) for one instance: pure, so it is tested without SkyPilot."""
    if not offer.accelerator:
        raise ValueError(f"{offer.gpu} has no SkyPilot accelerator name in the catalog (skypilot_name)")
    return {
        "name": name,
        "resources": {
            "accelerators": f"{offer.accelerator}:{max(1, offer.gpu_count)}",
            "use_spot": offer.spot,
            "labels": dict(spec.labels),
        },
        "envs": {"IK_SERVER": spec.server_url, "IK_WORKER_NAME": name},
        # A secret: SkyPilot redacts it in its logs and dashboard; one-time, expires with the boot deadline.
        "secrets": {"IK_JOIN_TOKEN": join_token},
        "run": run_script(spec.labels),
    }


def _status_name(record) -> str:
    status = record.get("status") if isinstance(record, dict) else getattr(record, "status", None)
    return str(getattr(status, "value", status) or "").upper()


class SkyPilotProvider:
    name = "skypilot"

    def __init__(self, sky=None):
        self._sky = sky

    @property
    def sky(self):
        if self._sky is None:
            try:
                import sky  # the optional extra
            except ImportError as exc:
                raise ProviderError("SkyPilot is not installed: pip install 'inferencekey-selfhosted[skypilot]'") from exc
            self._sky = sky
        return self._sky

    def offers(self, gpu_pool: list[str], cuda: list[str] | None) -> list[Offer]:
        return catalog_offers(self.name, gpu_pool, cuda, accelerator_of=lambda gpu: gpu.skypilot_name or None)

    def _records(self, names: list[str] | None = None) -> list:
        return list(self.sky.get(self.sky.status(cluster_names=names)) or [])

    def _launch_request(self, name: str):
        """A launch request for `name` still in SkyPilot's API server queue (clusters appear in
        `status` only once provisioning starts)."""
        try:
            requests = self.sky.api_status()
        except Exception:  # noqa: BLE001 - older API servers: no request listing
            return None
        for request in requests or []:
            get = request.get if isinstance(request, dict) else lambda k, r=request: getattr(r, k, None)
            if get("name") == "sky.launch" and get("cluster_name") == name:
                return request
        return None

    def launch(self, name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> InstanceInfo:
        existing = self.get(name)
        if existing is not None and existing.state != FAILED:
            return existing  # idempotent by name
        sky = self.sky
        task = sky.Task.from_yaml_config(task_config(name, offer, join_token, spec))
        try:
            request_id = sky.launch(task, cluster_name=name, retry_until_up=False, idle_minutes_to_autostop=None)
        except sky.exceptions.ResourcesUnavailableError as exc:
            raise CapacityError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise ProviderError(f"sky launch {name}: {exc}") from None
        return InstanceInfo(name, PENDING, dict(spec.labels), provider_id=str(request_id or ""))

    def get(self, name: str) -> InstanceInfo | None:
        records = [r for r in self._records([name]) if (r.get("name") if isinstance(r, dict) else r.name) == name]
        if records:
            status = _status_name(records[0])
            state = {"UP": RUNNING, "INIT": PENDING}.get(status, FAILED)
            return InstanceInfo(name, state, dict(MANAGED), message="" if state != FAILED else f"cluster {status.lower()}")
        request = self._launch_request(name)
        if request is None:
            return None
        get = request.get if isinstance(request, dict) else lambda k: getattr(request, k, None)
        status = str(getattr(get("status"), "value", get("status")) or "").upper()
        if status in ("FAILED", "CANCELLED"):
            return InstanceInfo(name, FAILED, dict(MANAGED), message=f"launch {status.lower()}: {get('error') or ''}".strip())
        return InstanceInfo(name, PENDING, dict(MANAGED))

    def list(self, labels: dict) -> list[InstanceInfo]:
        out = []
        for record in self._records(None):
            name = record.get("name") if isinstance(record, dict) else record.name
            if not str(name).startswith("ik-"):
                continue  # only clusters this server names
            status = _status_name(record)
            info = InstanceInfo(name, {"UP": RUNNING, "INIT": PENDING}.get(status, FAILED), {MANAGED_LABEL: "true"})
            # Cluster records do not carry our labels back: only the managed label can be matched.
            if matches(info.labels, {k: v for k, v in labels.items() if k == MANAGED_LABEL}) and \
                    set(labels) <= {MANAGED_LABEL}:
                out.append(info)
        return out

    def terminate(self, name: str) -> None:
        sky = self.sky
        try:
            sky.get(sky.down(name))
        except sky.exceptions.ClusterDoesNotExist:
            return
        except Exception as exc:  # noqa: BLE001
            if "does not exist" in str(exc).lower():
                return
            raise ProviderError(f"sky down {name}: {exc}") from None
