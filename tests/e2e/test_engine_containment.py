"""Issue 7, item 0, end to end: a team member's workload tries to run a shell, read the control plane's
environment and the agent's files through the shared local worker. It is refused (400) or contained."""
from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import httpx
import pytest

from tests.agent.test_engine_containment import world_can_run

from .conftest import STANDIN_BIN, wait_for

pytestmark = pytest.mark.e2e

SECRET_KEY = "e2e-" + secrets.token_urlsafe(48)
UP_EXTRA_ENV = {"SECRET_KEY": SECRET_KEY}
# Where the agent can switch users (root, and a stand-in `nobody` can run), engines run as `nobody`.
ENGINE_USER = "nobody" if os.geteuid() == 0 and world_can_run(STANDIN_BIN.parent / "server.py") else ""
UP_EXTRA_ARGS = ("--engine-user", ENGINE_USER) if ENGINE_USER else ()

ATTACKS = [
    "sh -c 'env; cat ~/.inferencekey-agent/credentials.json'",
    "python3 -c 'import os; print(os.environ)'",
    "/bin/bash -c id",
    "env vllm serve m",
    "vllm serve m; cat /etc/passwd",
    "vllm serve m && python3 -c 'import os'",
    "LD_PRELOAD=/tmp/evil.so vllm serve m",
    "PYTHONSTARTUP=/tmp/evil.py vllm serve m",
    "HF_X=ik_live_0123abcd_" + "0" * 64 + " vllm serve m",
]


def post_workload(stack, slug: str, command: str) -> httpx.Response:
    body = {"name": slug, "slug": slug, "model_name": "standin/tiny-chat", "backend": "vllm",
            "config": {"command": command}}
    return httpx.post(f"{stack.base_url}/api/projects/demo/workloads", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {stack.creds['sdk_token']}"})


@pytest.mark.parametrize("command", ATTACKS)
def test_hostile_commands_are_refused(stack, command):
    response = post_workload(stack, "attack", command)
    assert response.status_code == 400, response.text
    assert "config.command" in response.json()["fields"]


def standin_report(stack, marker: str) -> dict:
    def find():
        for path in (stack.data_dir / "agent" / "logs").glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("standin-report: ") and marker in line:
                    return json.loads(line[len("standin-report: "):])
        return None

    return wait_for(find, 90, what="the engine's report in its log")


def test_an_allowed_engine_sees_no_control_plane_secret_and_no_agent_file(stack):
    agent_files = [stack.data_dir / "agent" / "credentials.json", stack.data_dir / "agent" / "replicas.json",
                   *[p for p in (stack.data_dir / "db.sqlite3",) if p.exists()]]
    marker = secrets.token_hex(6)
    # Hex: the paths an engine running code of its own would find by itself (the agent refuses
    # arguments that name its files, see the next test).
    paths = ":".join(map(str, agent_files)).encode().hex()
    command = (f"STANDIN_REPORT=1 STANDIN_REPORT_READ_HEX={paths} REPORT_MARK={marker} "
               "vllm serve standin/tiny-chat --max-model-len 512")
    assert post_workload(stack, "probe", command).status_code == 201
    report = standin_report(stack, marker)
    environ = report["environ"]
    for name in ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "INFERENCEKEY_DATA_DIR", "IK_JOIN_TOKEN"):
        assert name not in environ
    assert not any(SECRET_KEY in value or "ik_wrk_" in value or "ik_join_" in value for value in environ.values())
    assert not environ["HOME"].startswith(str(Path.home()))
    if ENGINE_USER:
        assert report["uid"] != 0 and environ["USER"] == ENGINE_USER
        assert all(result.startswith("error") for result in report["reads"].values()), report["reads"]


def test_engine_arguments_naming_the_data_dir_are_refused_by_the_agent(stack):
    # vLLM would load this "chat template" and show it back through /tokenize + /detokenize.
    credentials = stack.data_dir / "agent" / "credentials.json"
    created = post_workload(stack, "template-leak", f"vllm serve standin/tiny-chat --chat-template {credentials}")
    assert created.status_code == 201
    url = f"{stack.base_url}/api/workloads/{created.json()['id']}"
    headers = {"Authorization": f"Bearer {stack.creds['sdk_token']}"}
    body = wait_for(lambda: (lambda b: b if b.get("phase") == "error" else None)(
        httpx.get(url, headers=headers, timeout=10).json()), 60, what="the workload to fail")
    assert "refusing to start" in body["message"] and "credentials.json" in body["message"]


def test_stack_files_are_private_and_the_join_token_is_not_in_ps(stack):
    wait_for(lambda: (stack.data_dir / "agent" / "credentials.json").exists(), 30, what="the agent's credentials")
    assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.data_dir / "agent").stat().st_mode) == 0o700
    assert stat.S_IMODE((stack.data_dir / "agent" / "credentials.json").stat().st_mode) == 0o600
    for pid in stack.children("workers.agent"):
        assert b"ik_join_" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert SECRET_KEY.encode() not in environ and b"DATABASE_URL=" not in environ
