"""The agent a GPU host downloads from the control plane (/agent/inferencekey-agent.pyz) runs on a
bare python3, without this repository or any installed package, and registers with a join token."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import httpx
import pytest

from workers import services
from workers.models import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def bare_python(*args: str, cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    # -I: no user site, no PYTHON* variables; -S: no site-packages. Only the standard library.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-I", "-S", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def pyz(live_server, tmp_path):
    response = httpx.get(f"{live_server.url}/agent/inferencekey-agent.pyz", timeout=30)
    assert response.status_code == 200 and response.headers["etag"]
    path = tmp_path / "inferencekey-agent.pyz"
    path.write_bytes(response.content)
    return path


def test_downloaded_agent_runs_on_a_bare_python(pyz, tmp_path):
    assert "workers/agent/cli.py" in zipfile.ZipFile(pyz).namelist()
    assert not any(name.startswith(("django/", "accounts/", "workloads/")) for name in zipfile.ZipFile(pyz).namelist())
    done = bare_python(str(pyz), "--help", cwd=tmp_path)
    assert done.returncode == 0 and "--join-token" in done.stdout, done.stderr


# The host's PATH without this virtualenv: `python3` is then a python without httpx or this repo.
HOST_PATH = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                            if not p.startswith(sys.prefix))


@pytest.mark.skipif(not (shutil.which("curl", path=HOST_PATH) and shutil.which("python3", path=HOST_PATH)),
                    reason="needs curl and a python3 outside this virtualenv")
def test_the_dashboard_join_command_installs_and_registers_the_agent(live_server, tenant, tmp_path):
    join = services.join_token_create(team=tenant.team, name="gpu-host", accepts_cpu=True)
    command = services.agent_command(server_url=live_server.url, join_token=join.value)
    # As pasted on a GPU host (a fresh HOME, the system's python3), plus --once to return after one heartbeat.
    env = {"PATH": HOST_PATH, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-c", command + " --cpu-only --once"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    worker = Worker.objects.get(team=tenant.team)
    assert worker.name == "gpu-host" and worker.last_heartbeat_at is not None
    assert (tmp_path / ".inferencekey-agent" / "credentials.json").exists()


def test_download_is_revalidated_by_etag(client, db):
    first = client.get("/agent/inferencekey-agent.pyz")
    again = client.get("/agent/inferencekey-agent.pyz", HTTP_IF_NONE_MATCH=first["ETag"])
    assert first.status_code == 200 and again.status_code == 304


def test_join_command_downloads_the_agent_from_this_server():
    command = services.agent_command(server_url="https://ik.example.com", join_token="ik_join_x", name="box")
    assert "pip install" not in command
    assert "curl -fsSL https://ik.example.com/agent/inferencekey-agent.pyz" in command
    assert "IK_JOIN_TOKEN=ik_join_x python3" in command and "--join-token" not in command
