"""The shared local worker is a one-machine convenience; `up` keeps its secrets to itself."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from inferencekey_web.lib.secret_key import data_dir_secret_key
from workers import services
from workers.management.commands.up import Command as Up
from workers.models import Replica, Worker
from workloads import reconcile
from workloads.services import workload_create

from .specs import vllm_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shared_worker(db):
    return Worker.objects.create(team=None, name="local", accepts_cpu=True, state=Worker.State.ONLINE,
                                 last_heartbeat_at=timezone.now())


def test_without_opt_in_no_shared_worker_is_created_or_used(settings, tenant, shared_worker):
    settings.ALLOW_SHARED_WORKER = False
    with pytest.raises(services.SharedWorkerRefused):
        services.join_token_create(team=None, name="local", accepts_cpu=True)
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    assert not Replica.objects.filter(worker=shared_worker).exists()


def test_a_shared_worker_gets_no_launch_orders_once_sharing_is_off(settings, tenant, shared_worker):
    workload = workload_create(project=tenant.project, data=vllm_spec())
    reconcile.run(workload.id)
    assert len(services.worker_heartbeat(worker=shared_worker, payload={})[0]) == 1
    settings.ALLOW_SHARED_WORKER = False
    assert services.worker_heartbeat(worker=shared_worker, payload={})[0] == []


def test_production_settings_turn_the_shared_worker_off_unless_opted_in():
    def allowed(extra: dict) -> str:
        env = {k: v for k, v in os.environ.items() if k != "INFERENCEKEY_ALLOW_SHARED_WORKER"}
        env.update(SECRET_KEY="p" + "roduction-key-" * 5, **extra)
        code = "from inferencekey_web import settings_production as s; print(s.ALLOW_SHARED_WORKER)"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()

    assert allowed({}) == "False"
    assert allowed({"INFERENCEKEY_ALLOW_SHARED_WORKER": "1"}) == "True"


def test_generated_secret_key_is_private_random_and_stable(tmp_path):
    key = data_dir_secret_key(tmp_path)
    assert len(key) >= 50 and "insecure" not in key
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert data_dir_secret_key(tmp_path) == key


def test_up_gives_the_agent_its_join_token_by_environment_and_no_control_plane_secret(db, settings):
    env = {"PATH": "/usr/bin", "SECRET_KEY": "s3cret", "DATABASE_URL": "postgres://u:pw@db/x",
           "CELERY_BROKER_URL": "redis://:pw@r/0", "HOME": "/home/x", "IK_LOG_LEVEL": "DEBUG"}
    child = Up()._agent(sys.executable, "http://127.0.0.1:8000", env, "", "")
    assert not any(arg.startswith("ik_join_") for arg in child.argv) and "--join-token" not in child.argv
    assert child.env["IK_JOIN_TOKEN"].startswith("ik_join_") and child.env["IK_LOG_LEVEL"] == "DEBUG"
    assert not {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} & set(child.env)
