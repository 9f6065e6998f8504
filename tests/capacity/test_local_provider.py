"""The `local` provider: an instance is an agent process with its own state dir and a pid file."""
from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from workers.agent.gpus import parse_simulated_gpu
from workers.agent.state import pid_alive, proc_start_time
from workers.providers.base import MANAGED, WORKLOAD_LABEL, LaunchSpec, Offer
from workers.providers.local import LocalProvider

OFFER = Offer("NVIDIA L4", Decimal("0.43"), "local", vram_gb=24)
SPEC = LaunchSpec("http://127.0.0.1:9", {**MANAGED, WORKLOAD_LABEL: "wl_test"})  # nothing listens: it keeps retrying


@pytest.fixture
def provider(tmp_path, real_local_agents):
    p = LocalProvider(tmp_path, stop_timeout=5)
    yield p
    for info in p.list({}):
        p.terminate(info.name)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_launch_starts_an_agent_reporting_one_simulated_gpu(provider):
    info = provider.launch("ik-a-1", OFFER, "ik_join_x", SPEC)
    argv = cmdline(int(info.provider_id))
    assert info.state == "running"
    assert argv[argv.index("--simulate-gpu") + 1] == "NVIDIA L4:24576" and "--stop-engines-on-exit" in argv


def test_launch_is_idempotent_by_name(provider):
    first = provider.launch("ik-a-1", OFFER, "ik_join_x", SPEC)
    again = provider.launch("ik-a-1", OFFER, "ik_join_y", SPEC)
    assert again.provider_id == first.provider_id and len(provider.list(MANAGED)) == 1


def test_a_restarted_server_finds_its_instances_by_label(provider, tmp_path):
    provider.launch("ik-a-1", OFFER, "ik_join_x", SPEC)
    restarted = LocalProvider(tmp_path)
    assert [i.name for i in restarted.list({WORKLOAD_LABEL: "wl_test"})] == ["ik-a-1"]
    assert restarted.list({WORKLOAD_LABEL: "wl_other"}) == []


def test_join_token_goes_in_the_environment_not_the_argv(provider):
    info = provider.launch("ik-a-1", OFFER, "ik_join_secret", SPEC)
    environ = Path(f"/proc/{info.provider_id}/environ").read_bytes().split(b"\0")
    assert b"IK_JOIN_TOKEN=ik_join_secret" in environ and "ik_join_secret" not in " ".join(cmdline(int(info.provider_id)))


def test_terminate_stops_the_agent_and_engines_it_left(provider):
    info = provider.launch("ik-a-1", OFFER, "ik_join_x", SPEC)
    engine = subprocess.Popen(["sleep", "300"], start_new_session=True)
    state = provider.root / "ik-a-1" / "agent"
    state.mkdir(parents=True, exist_ok=True)
    (state / "replicas.json").write_text(json.dumps({"rep_1": {"pid": engine.pid, "pgid": engine.pid,
                                                               "start_time": proc_start_time(engine.pid)}}))
    provider.terminate("ik-a-1")
    assert engine.wait(5) is not None
    assert not pid_alive(int(info.provider_id)) and provider.get("ik-a-1") is None


def test_terminate_is_idempotent(provider):
    provider.terminate("ik-never-launched")
    assert provider.get("ik-never-launched") is None


def test_an_agent_that_died_reads_as_failed(provider):
    import os
    import signal
    import time

    pid = int(provider.launch("ik-a-1", OFFER, "ik_join_x", SPEC).provider_id)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.get("ik-a-1").state == "failed"


@pytest.mark.parametrize("text", ["NVIDIA L4", "NVIDIA L4:", "NVIDIA L4:x", ":1024", "NVIDIA L4:0"])
def test_simulated_gpu_spec_must_be_name_and_positive_vram(text):
    with pytest.raises(ValueError):
        parse_simulated_gpu(text)


def test_simulated_gpu_keeps_colons_in_the_name():
    assert parse_simulated_gpu("Vendor: GPU X:2048")["name"] == "Vendor: GPU X"


def test_agent_reports_the_simulated_gpu_instead_of_running_nvidia_smi(tmp_path, monkeypatch):
    from workers.agent.loop import Agent, AgentConfig

    monkeypatch.setenv("IK_FAKE_NVIDIA_SMI", "/nonexistent/nvidia-smi")
    agent = Agent(AgentConfig(server="http://127.0.0.1:9", state_dir=tmp_path, simulate_gpu="NVIDIA L4:24576"))
    assert [(g["name"], g["memory_total_mb"]) for g in agent._gpus()] == [("NVIDIA L4", 24576)]


def test_agent_cli_refuses_a_malformed_simulated_gpu(tmp_path, capsys):
    from workers.agent.cli import main

    assert main(["--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path), "--simulate-gpu", "L4"]) == 2
    assert "--simulate-gpu" in capsys.readouterr().err
