"""Spec builders and the bad-spec table shared by the validator, API and form tests."""
from __future__ import annotations

import copy


def vllm_spec(**overrides) -> dict:
    spec = {
        "name": "Support Bot",
        "slug": "support-bot",
        "model_name": "meta-llama/Llama-3.1-8B-Instruct",
        "backend": "vllm",
        "task_type": "text2text",
        "config": {"command": "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 8192"},
    }
    spec.update(overrides)
    return spec


CLOUD_AUTOSCALING = {
    "min_workers": 0,
    "max_workers": 5,
    "max_hourly_cost_usd": 5.0,
    "workers": {
        "source": "cloud",
        "cloud_pool": {
            "gpu_pool": ["NVIDIA A100-SXM4-80GB"],
            "max_hourly_cost_usd": 5.0,
            "max_instances": 5,
            "allowed_cuda_versions": ["13.0"],
        },
    },
}


def autoscaling(**changes) -> dict:
    """The cloud autoscaling config with dotted-path changes (value None deletes the key)."""
    config = copy.deepcopy(CLOUD_AUTOSCALING)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        if value is _DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return config


_DELETE = object()
DELETE = _DELETE


def policy(kind: str, config) -> dict:
    return vllm_spec(execution_policy=kind, execution_policy_config=config)


# (case id, spec, field path the error must name)
BAD_SPECS: list[tuple[str, dict, str]] = [
    ("missing-name", {k: v for k, v in vllm_spec().items() if k != "name"}, "name"),
    ("empty-name", vllm_spec(name="   "), "name"),
    ("name-not-string", vllm_spec(name=42), "name"),
    ("missing-slug", {k: v for k, v in vllm_spec().items() if k != "slug"}, "slug"),
    ("slug-only-symbols", vllm_spec(slug="---"), "slug"),
    ("slug-too-long", vllm_spec(slug="a" * 80), "slug"),
    ("missing-model", {k: v for k, v in vllm_spec().items() if k != "model_name"}, "model_name"),
    ("empty-model", vllm_spec(model_name=""), "model_name"),
    ("model-alias", {**vllm_spec(), "model": "x"}, "model"),
    ("missing-backend", {k: v for k, v in vllm_spec().items() if k != "backend"}, "backend"),
    ("unknown-backend", vllm_spec(backend="tensorrt"), "backend"),
    ("unknown-task-type", vllm_spec(task_type="text2speech"), "task_type"),
    ("vllm-without-command", vllm_spec(config=None), "config.command"),
    ("llamacpp-without-command", vllm_spec(backend="llamacpp", config={}), "config.command"),
    ("vllm-omni-without-command", vllm_spec(backend="vllm-omni", config={"vllm_version": "0.9.1"}), "config.command"),
    ("config-not-object", vllm_spec(config="vllm serve x"), "config"),
    ("config-unknown-key", vllm_spec(config={"command": "vllm serve m", "gpu_count": 2}), "config.gpu_count"),
    ("command-empty", vllm_spec(config={"command": "  "}), "config.command"),
    ("command-unbalanced-quote", vllm_spec(config={"command": "vllm serve 'm"}), "config.command"),
    ("vllm-version-on-llamacpp", vllm_spec(backend="llamacpp", config={"command": "llama-server -m x", "vllm_version": "0.6.3"}), "config.vllm_version"),
    ("vllm-version-not-version", vllm_spec(config={"command": "vllm serve m", "vllm_version": "latest!"}), "config.vllm_version"),
    ("vllm-version-number", vllm_spec(config={"command": "vllm serve m", "vllm_version": 0.6}), "config.vllm_version"),
    ("command-on-ollama", vllm_spec(backend="ollama", config={"command": "ollama run x"}), "config.command"),
    ("unknown-policy", vllm_spec(execution_policy="burst"), "execution_policy"),
    ("policy-config-without-policy", vllm_spec(execution_policy_config={"replicas": 1}), "execution_policy"),
    ("fixed-negative", policy("fixed", {"replicas": -1}), "execution_policy_config.replicas"),
    ("fixed-float", policy("fixed", {"replicas": 1.5}), "execution_policy_config.replicas"),
    ("fixed-bool", policy("fixed", {"replicas": True}), "execution_policy_config.replicas"),
    ("fixed-unknown-key", policy("fixed", {"replicas": 1, "gpus": 2}), "execution_policy_config.gpus"),
    ("fixed-config-list", policy("fixed", [1]), "execution_policy_config"),
    ("scheduled-none", policy("scheduled", {}), "execution_policy_config"),
    ("scheduled-both", policy("scheduled", {"cron": "0 2 * * *", "window": "Mon-Fri 08:00-20:00 UTC"}), "execution_policy_config"),
    ("scheduled-bad-cron", policy("scheduled", {"cron": "61 2 * * *"}), "execution_policy_config.cron"),
    ("scheduled-six-field-cron", policy("scheduled", {"cron": "0 0 2 * * *"}), "execution_policy_config.cron"),
    ("scheduled-bad-window", policy("scheduled", {"window": "weekdays 8-20"}), "execution_policy_config.window"),
    ("scheduled-bad-day", policy("scheduled", {"window": "Mon-Fry 08:00-20:00 UTC"}), "execution_policy_config.window"),
    ("scheduled-bad-time", policy("scheduled", {"window": "Mon-Fri 08:00-25:00 UTC"}), "execution_policy_config.window"),
    ("scheduled-unknown-zone", policy("scheduled", {"window": "Mon-Fri 08:00-20:00 Mars/Olympus"}), "execution_policy_config.window"),
    ("scheduled-empty-window", policy("scheduled", {"window": "Mon 08:00-08:00 UTC"}), "execution_policy_config.window"),
    ("scheduled-cron-bad-zone", policy("scheduled", {"cron": "0 2 * * *", "timezone": "Nowhere/City"}), "execution_policy_config.timezone"),
    ("autoscaling-no-config", policy("autoscaling", None), "execution_policy_config.max_hourly_cost_usd"),
    ("autoscaling-min-gt-max", policy("autoscaling", autoscaling(min_workers=6)), "execution_policy_config.min_workers"),
    ("autoscaling-max-zero", policy("autoscaling", autoscaling(max_workers=0)), "execution_policy_config.max_workers"),
    ("autoscaling-min-negative", policy("autoscaling", autoscaling(min_workers=-1)), "execution_policy_config.min_workers"),
    ("autoscaling-max-missing", policy("autoscaling", autoscaling(max_workers=DELETE)), "execution_policy_config.max_workers"),
    ("autoscaling-cost-missing", policy("autoscaling", autoscaling(max_hourly_cost_usd=DELETE)), "execution_policy_config.max_hourly_cost_usd"),
    ("autoscaling-cost-zero", policy("autoscaling", autoscaling(max_hourly_cost_usd=0)), "execution_policy_config.max_hourly_cost_usd"),
    ("autoscaling-cost-string", policy("autoscaling", autoscaling(max_hourly_cost_usd="5")), "execution_policy_config.max_hourly_cost_usd"),
    ("autoscaling-min-replicas", policy("autoscaling", autoscaling(min_replicas=1)), "execution_policy_config.min_replicas"),
    ("autoscaling-max-replicas", policy("autoscaling", autoscaling(max_replicas=3)), "execution_policy_config.max_replicas"),
    ("autoscaling-bad-source", policy("autoscaling", autoscaling(workers__source="spot")), "execution_policy_config.workers.source"),
    ("autoscaling-no-workers", policy("autoscaling", autoscaling(workers=DELETE)), "execution_policy_config.workers"),
    ("autoscaling-empty-pool", policy("autoscaling", autoscaling(workers__cloud_pool__gpu_pool=[])), "execution_policy_config.workers.cloud_pool.gpu_pool"),
    ("autoscaling-unknown-gpu", policy("autoscaling", autoscaling(workers__cloud_pool__gpu_pool=["NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"])), "execution_policy_config.workers.cloud_pool.gpu_pool[1]"),
    ("autoscaling-pool-cost-negative", policy("autoscaling", autoscaling(workers__cloud_pool__max_hourly_cost_usd=-1)), "execution_policy_config.workers.cloud_pool.max_hourly_cost_usd"),
    ("autoscaling-max-instances-zero", policy("autoscaling", autoscaling(workers__cloud_pool__max_instances=0)), "execution_policy_config.workers.cloud_pool.max_instances"),
    ("autoscaling-cuda-unrunnable", policy("autoscaling", autoscaling(workers__cloud_pool__allowed_cuda_versions=["10.2"])), "execution_policy_config.workers.cloud_pool.allowed_cuda_versions[0]"),
    ("autoscaling-cuda-not-version", policy("autoscaling", autoscaling(workers__cloud_pool__allowed_cuda_versions=["latest"])), "execution_policy_config.workers.cloud_pool.allowed_cuda_versions[0]"),
    ("autoscaling-legacy-pool-with-cuda", policy("autoscaling", {"min_workers": 0, "max_workers": 2, "max_hourly_cost_usd": 3.0, "gpu_pool": ["NVIDIA L40S"], "workers": {"source": "cloud", "cloud_pool": {"allowed_cuda_versions": ["12.8"]}}}), "execution_policy_config.gpu_pool"),
    ("autoscaling-legacy-pool-unknown-gpu", policy("autoscaling", {"min_workers": 0, "max_workers": 2, "max_hourly_cost_usd": 3.0, "gpu_pool": ["RTX 9999"]}), "execution_policy_config.gpu_pool[0]"),
    ("autoscaling-private-no-ids", policy("autoscaling", {"min_workers": 1, "max_workers": 2, "workers": {"source": "private"}}), "execution_policy_config.workers.private_worker_ids"),
    ("autoscaling-private-bad-id", policy("autoscaling", {"min_workers": 1, "max_workers": 2, "workers": {"source": "private", "private_worker_ids": ["box-1"]}}), "execution_policy_config.workers.private_worker_ids[0]"),
    ("autoscaling-private-unknown-worker", policy("autoscaling", {"min_workers": 1, "max_workers": 2, "workers": {"source": "private", "private_worker_ids": ["wrk_doesnotexist0000"]}}), "execution_policy_config.workers.private_worker_ids[0]"),
    ("worker-id-format", vllm_spec(worker_id="box-1"), "worker_id"),
    ("worker-id-unknown", vllm_spec(worker_id="wrk_doesnotexist0000"), "worker_id"),
    ("gpu-id-format", vllm_spec(gpu_resource_id="0"), "gpu_resource_id"),
    ("gpu-id-unknown", vllm_spec(gpu_resource_id="gpu_doesnotexist0000"), "gpu_resource_id"),
    ("secret-in-description", vllm_spec(description="ik_live_0123abcd_" + "0" * 64), "description"),
    ("secret-in-command", vllm_spec(config={"command": "vllm serve m --api-key ik_sdk_0123abcd_" + "0" * 64}), "config.command"),
    ("secret-as-name", vllm_spec(name="ik_sdk_x"), "name"),
    ("secret-as-env-in-command", vllm_spec(config={"command": "HF_X=ik_live_0123abcd_" + "0" * 64 + " vllm serve m"}), "config.command"),
    ("secret-as-flag-value", vllm_spec(config={"command": "vllm serve m --api-key=ik_sdk_0123abcd_" + "0" * 64}), "config.command"),
    ("command-sh-c", vllm_spec(config={"command": "sh -c 'cat /etc/passwd'"}), "config.command"),
    ("command-python-c", vllm_spec(config={"command": "python3 -c 'import os; print(os.environ)'"}), "config.command"),
    ("command-bin-bash", vllm_spec(config={"command": "/bin/bash"}), "config.command"),
    ("command-absolute-vllm", vllm_spec(config={"command": "/tmp/x/vllm serve m"}), "config.command"),
    ("command-env-wrapper", vllm_spec(config={"command": "env vllm serve m"}), "config.command"),
    ("command-nohup", vllm_spec(config={"command": "nohup vllm serve m"}), "config.command"),
    ("command-chain", vllm_spec(config={"command": "vllm serve m; sh -c id"}), "config.command"),
    ("command-and-chain", vllm_spec(config={"command": "vllm serve m && cat /etc/passwd"}), "config.command"),
    ("command-substitution", vllm_spec(config={"command": "vllm serve $(id)"}), "config.command"),
    ("command-ld-preload", vllm_spec(config={"command": "LD_PRELOAD=/tmp/x.so vllm serve m"}), "config.command"),
    ("command-export-pythonpath", vllm_spec(config={"command": "export PYTHONPATH=/tmp\nvllm serve m"}), "config.command"),
    ("command-path", vllm_spec(config={"command": "PATH=/tmp vllm serve m"}), "config.command"),
    ("command-home", vllm_spec(config={"command": "HOME=/root vllm serve m"}), "config.command"),
    ("command-llamacpp-runs-vllm", vllm_spec(backend="llamacpp", config={"command": "vllm serve m"}), "config.command"),
    ("command-python-module-other", vllm_spec(config={"command": "python3 -m http.server"}), "config.command"),
    ("command-pinned-python-module", vllm_spec(config={"command": "python3 -m vllm.entrypoints.openai.api_server --model m", "vllm_version": "0.6.3"}), "config.command"),
    ("command-too-long", vllm_spec(config={"command": "vllm serve m" + " --x" * 5000}), "config.command"),
    ("cron-never-fires", policy("scheduled", {"cron": "0 0 30 2 *"}), "execution_policy_config.cron"),
    ("unknown-field", {**vllm_spec(), "min_vram_gb": 24}, "min_vram_gb"),
]
