"""`local` provider: an instance is an agent process on this machine (the one-machine default).

Each agent gets its own state dir under `$INFERENCEKEY_DATA_DIR/cloud-local/<name>/`, reports one
simulated GPU with the catalog's name and VRAM (`--simulate-gpu`), and runs engines as ordinary
processes with the PATH `up --agent-path` gives the local agent. A pid file (`instance.json`: pid,
process start time) lets get / list / terminate work across server restarts; terminate stops the
agent (which stops its engines), then kills whatever is left of the agent's and the engines'
process groups.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from workers.agent.state import kill_group_leftovers, pid_alive, proc_start_time, read_json, signal_group

from .base import FAILED, PENDING, RUNNING, TERMINATED, InstanceInfo, LaunchSpec, Offer, matches
from .prices import catalog_offers

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What an agent inherits from the server's environment (as `up` hands its local agent): no
# SECRET_KEY, DATABASE_URL or broker URL.
AGENT_ENV = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
                       "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"})
AGENT_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "IK_")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RECORD = "instance.json"


class LocalProvider:
    name = "local"

    def __init__(self, root: Path, *, agent_path: str = "", protect_dirs: str = "", python: str = sys.executable,
                 stop_timeout: float = 20.0, environ: dict | None = None):
        self.root = Path(root)
        self.agent_path = agent_path
        self.protect_dirs = protect_dirs
        self.python = python
        self.stop_timeout = stop_timeout
        self.environ = dict(os.environ if environ is None else environ)

    def offers(self, gpu_pool: list[str], cuda: list[str] | None) -> list[Offer]:
        return catalog_offers(self.name, gpu_pool, cuda)

    def _dir(self, name: str) -> Path:
        if not _NAME.match(name or ""):
            raise ValueError(f"instance name {name!r} is not a DNS-1123 label")
        return self.root / name

    def _env(self, join_token: str) -> dict:
        env = {k: v for k, v in self.environ.items() if k in AGENT_ENV or k.startswith(AGENT_ENV_PREFIXES)}
        env.pop("IK_SIMULATE_GPU", None)
        if self.agent_path:
            env["PATH"] = self.agent_path + os.pathsep + env.get("PATH", os.defpath)
        env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(IK_JOIN_TOKEN=join_token, PYTHONUNBUFFERED="1")
        if self.protect_dirs:
            env["IK_PROTECT_DIRS"] = self.protect_dirs
        return env

    def launch(self, name: str, offer: Offer, join_token: str, spec: LaunchSpec) -> InstanceInfo:
        home = self._dir(name)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            home.mkdir(mode=0o700)  # atomic: the one launcher of this name
        except FileExistsError:
            return self.get(name) or InstanceInfo(name, PENDING, dict(spec.labels))
        argv = [self.python, "-m", "workers.agent", "--server", spec.server_url, "--state-dir", str(home / "agent"),
                "--name", name, "--simulate-gpu", f"{offer.gpu}:{max(1, offer.vram_gb) * 1024}",
                "--stop-engines-on-exit"]
        for key, value in sorted(spec.labels.items()):
            argv += ["--label", f"{key}={value}"]
        with open(home / "agent.log", "ab") as log:
            proc = subprocess.Popen(argv, env=self._env(join_token), cwd=str(PROJECT_ROOT), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        record = {"name": name, "pid": proc.pid, "pgid": proc.pid, "start_time": proc_start_time(proc.pid),
                  "labels": dict(spec.labels), "offer": offer.as_json(),
                  "launched_at": datetime.now(UTC).isoformat()}
        tmp = home / f".{RECORD}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, home / RECORD)
        return InstanceInfo(name, RUNNING, dict(spec.labels), provider_id=str(proc.pid))

    def _record(self, name: str) -> dict | None:
        data = read_json(self._dir(name) / RECORD)
        return data if isinstance(data, dict) and data.get("pid") else None

    def get(self, name: str) -> InstanceInfo | None:
        home = self._dir(name)
        if not home.exists():
            return None
        record = self._record(name)
        if record is None:
            return InstanceInfo(name, PENDING)  # being launched right now
        labels = record.get("labels") or {}
        if record.get("terminated"):
            return InstanceInfo(name, TERMINATED, labels, str(record["pid"]))
        if pid_alive(int(record["pid"]), record.get("start_time")):
            return InstanceInfo(name, RUNNING, labels, str(record["pid"]))
        return InstanceInfo(name, FAILED, labels, str(record["pid"]), f"the agent process exited; {self._log_tail(home)}")

    @staticmethod
    def _log_tail(home: Path) -> str:
        try:
            lines = (home / "agent.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no agent log"
        return "agent log: " + " | ".join(lines[-2:])[-300:]

    def list(self, labels: dict) -> list[InstanceInfo]:
        if not self.root.is_dir():
            return []
        out = []
        for home in sorted(self.root.iterdir()):
            if home.is_dir() and _NAME.match(home.name):
                info = self.get(home.name)
                if info is not None and matches(info.labels, labels):
                    out.append(info)
        return out

    def terminate(self, name: str) -> None:
        home = self._dir(name)
        record = self._record(name) if home.exists() else None
        if record is not None:
            pid, pgid, started = int(record["pid"]), int(record.get("pgid") or record["pid"]), record.get("start_time")
            if pid_alive(pid, started):
                # The agent runs with --stop-engines-on-exit: SIGTERM stops its engines and reports
                # the worker offline; the deadline bounds an agent that hangs.
                signal_group(pgid, signal.SIGTERM)
                deadline = time.monotonic() + self.stop_timeout
                while pid_alive(pid, started) and time.monotonic() < deadline:
                    time.sleep(0.1)
            _kill_group(pid, pgid, started)
            # Engines lead their own process groups: whatever the agent left behind goes too.
            engines = read_json(home / "agent" / "replicas.json")
            for entry in (engines.values() if isinstance(engines, dict) else []):
                try:
                    epid, egroup = int(entry["pid"]), int(entry.get("pgid") or entry["pid"])
                except (KeyError, TypeError, ValueError):
                    continue
                _kill_group(epid, egroup, entry.get("start_time"))
        shutil.rmtree(home, ignore_errors=True)


def _kill_group(pid: int, pgid: int, started) -> None:
    """SIGKILL what is left of a group we started. Linux hands out no pid that is a live group's
    id, so members found under `pgid` are ours, unless the leader's pid now belongs to another
    process (a different start time): then the group is long gone and the id is someone else's."""
    current = proc_start_time(pid)
    if current is not None and started is not None and current != started:
        return
    kill_group_leftovers(pgid)
