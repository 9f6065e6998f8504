"""`kubernetes` provider: an instance is a Pod running the agent on a GPU node.

The Pod asks for one `nvidia.com/gpu` and selects nodes by the NVIDIA GPU feature discovery label
`nvidia.com/gpu.product` (the catalog display name with spaces as dashes: `NVIDIA-L4`,
`NVIDIA-A100-SXM4-80GB`). Its container downloads the agent zipapp from this server
(/agent/inferencekey-agent.pyz) and runs it with the one-time join token; the image
(INFERENCEKEY_K8S_IMAGE) needs python3 ≥ 3.11 and the engines the workloads use. The official
`kubernetes` client talks to the cluster (kubeconfig, in-cluster config, or INFERENCEKEY_K8S_API_URL).
"""
from __future__ import annotations

import shlex

from .base import FAILED, PENDING, PREEMPTED, RUNNING, CapacityError, InstanceInfo, LaunchSpec, Offer, ProviderError
from .prices import catalog_offers

STATE_DIR = "/var/lib/inferencekey-agent"
PRODUCT_LABEL = "nvidia.com/gpu.product"


def product_label(display_name: str) -> str:
    """The GPU feature discovery product label of a catalog GPU: 'NVIDIA A100-SXM4-80GB' → 'NVIDIA-A100-SXM4-80GB'."""
    return "-".join(display_name.split())


def agent_script(labels: dict) -> str:
    """The container's command: fetch the agent zipapp from the server, then run it in the foreground."""
    fetch = ("python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "
             f'"$IK_SERVER/agent/inferencekey-agent.pyz" {STATE_DIR}/agent.pyz')
    label_args = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in sorted(labels.items()))
    return f"{fetch} && exec python3 {STATE_DIR}/agent.pyz --stop-engines-on-exit {label_args}".strip()


def pod_manifest(name: str, offer: Offer, join_token: str, spec: LaunchSpec, *, namespace: str, image: str) -> dict:
    """The Pod for one instance (pure: tested and schema-validated without a cluster)."""
    env = [
        {"name": "IK_SERVER", "value": spec.server_url},
        {"name": "IK_JOIN_TOKEN", "value": join_token},  # one-time, expires with the boot deadline
        {"name": "IK_WORKER_NAME", "value": name},
        {"name": "IK_STATE_DIR", "value": STATE_DIR},
        # The gateway reaches engines at the Pod's IP.
        {"name": "IK_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    gpus = str(max(1, offer.gpu_count))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**spec.labels, "app.kubernetes.io/managed-by": "inferencekey"},
            "annotations": {"inferencekey.io/gpu": offer.gpu, "inferencekey.io/usd-per-hour": str(offer.usd_per_hour)},
        },
        "spec": {
            # The join token is one-time: a crashed agent is replaced by a new instance, not restarted.
            "restartPolicy": "Never",
            "nodeSelector": {PRODUCT_LABEL: offer.accelerator or product_label(offer.gpu)},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 60,  # the agent stops its engines on SIGTERM
            "containers": [{
                "name": "agent",
                "image": image,
                "command": ["sh", "-c", agent_script(spec.labels)],
                "env": env,
                "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
                "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
            }],
            "volumes": [{"name": "state", "emptyDir": {}}],
        },
    }


def _state(pod) -> tuple[str, str]:
    status = pod.status
    phase = getattr(status, "phase", None) or "Pending"
    reason = getattr(status, "reason", None) or ""
    if reason in ("Preempted", "Evicted", "Shutdown", "Terminated", "NodeLost"):
        return PREEMPTED, f"pod {reason.lower()}: {getattr(status, 'message', '') or ''}".strip()
    if phase == "Running":
        return RUNNING, ""
    if phase in ("Succeeded", "Failed"):
        return FAILED, f"pod {phase.lower()}{': ' + reason if reason else ''}"
    return PENDING, ""


class KubernetesProvider:
    name = "kubernetes"

    def __init__(self, api, *, namespace: str = "default", image: str = "vllm/vllm-openai:latest"):
        self.api = api  # kubernetes.client.CoreV1Api
        self.namespace = namespace
        self.image = image

    @classmethod
    def from_settings(cls) -> KubernetesProvider:
        from django.conf import settings
        from kubernetes import client, config

        if settings.K8S_API_URL:
            configuration = client.Configuration()
            configuration.host = settings.K8S_API_URL
            api_client = client.ApiClient(configuration)
        else:
            try:
                config.load_kube_config()
            except config.ConfigException:
                config.load_incluster_config()
            api_client = client.ApiClient()
        return cls(client.CoreV1Api(api_client), namespace=settings.K8S_NAMESPACE, image=settings.K8S_IMAGE)

    def offers(self, gpu_pool: list[str], cuda: list[str] | None) -> list[Offer]:
        return catalog_offers(self.name, gpu_pool, cuda, accelerator_of=lambda gpu: product_label(gpu.display_name))

    def launch(self, name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> InstanceInfo:
        from kubernetes.client.exceptions import ApiException

        body = pod_manifest(name, offer, join_token, spec, namespace=self.namespace, image=self.image)
        try:
            pod = self.api.create_namespaced_pod(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: launched before under this name
                return self.get(name) or InstanceInfo(name, PENDING, dict(spec.labels))
            if exc.status == 403 and "quota" in (exc.body or "").lower():
                raise CapacityError(f"namespace quota: {exc.reason}") from None
            raise ProviderError(f"create pod {name}: {exc.status} {exc.reason}") from None
        state, message = _state(pod)
        return InstanceInfo(name, state, dict(pod.metadata.labels or {}), pod.metadata.uid or "", message)

    def get(self, name: str) -> InstanceInfo | None:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.api.read_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ProviderError(f"read pod {name}: {exc.status} {exc.reason}") from None
        state, message = _state(pod)
        return InstanceInfo(name, state, dict(pod.metadata.labels or {}), pod.metadata.uid or "", message)

    def list(self, labels: dict) -> list[InstanceInfo]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self.api.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [InstanceInfo(p.metadata.name, *_state(p)[:1], dict(p.metadata.labels or {}), p.metadata.uid or "")
                for p in pods]

    def terminate(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise ProviderError(f"delete pod {name}: {exc.status} {exc.reason}") from None
