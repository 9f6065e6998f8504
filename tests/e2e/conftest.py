"""The real one-machine stack as processes: `manage.py up` (uvicorn, Celery worker and beat, the
local agent) with the stand-in engine installed as `vllm` on the agent's PATH.

The stack gets its own database (a fresh SQLite file, or a fresh PostgreSQL database when
DATABASE_URL points at PostgreSQL), so it is independent of pytest-django's test database.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN_BIN = ROOT / "tests" / "standin_engine" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _fresh_database(tmp: Path) -> tuple[str, callable]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'db.sqlite3'}", lambda: None
    import psycopg

    name = f"ik_e2e_{uuid.uuid4().hex[:10]}"
    admin = urlunparse(urlparse(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunparse(urlparse(url)._replace(path=f"/{name}")), drop


def processes_matching(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (the stack's data dir is in every engine's argv/env)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if marker in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
            pids.append(int(entry.name))
    return pids


def engine_pids(data_dir: Path) -> list[int]:
    """Running stand-in engines started by the stack whose data dir is `data_dir` (their HOME is the
    scratch dir under its agent state dir; other stand-ins on this machine are not counted)."""
    marker = f"HOME={data_dir / 'agent' / 'engine-home'}".encode()
    out = []
    for pid in processes_matching("standin_engine/server.py"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            out.append(pid)
    return out


@dataclass
class Stack:
    base_url: str
    data_dir: Path
    env: dict
    proc: subprocess.Popen
    creds: dict = field(default_factory=dict)

    def manage(self, *args: str) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True, timeout=120).stdout

    def children(self, name_marker: str) -> list[int]:
        return [p for p in processes_matching(name_marker) if _has_ancestor(p, self.proc.pid)]

    def engines(self) -> list[int]:
        return engine_pids(self.data_dir)

    def log(self) -> str:
        path = self.data_dir / "up.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


def _has_ancestor(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("stack")
    database_url, drop = _fresh_database(tmp)
    port = free_port()
    env = {
        **os.environ,
        "INFERENCEKEY_DATA_DIR": str(tmp),
        "DATABASE_URL": database_url,
        "INFERENCEKEY_BASE_URL": f"http://127.0.0.1:{port}",
        "INFERENCEKEY_HEARTBEAT_INTERVAL_S": "1",
        "INFERENCEKEY_SWEEP_INTERVAL_S": "3",
        "DJANGO_SETTINGS_MODULE": "inferencekey_web.settings",
        **getattr(request.module, "UP_EXTRA_ENV", {}),
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = open(tmp / "up.log", "wb")
    extra = list(getattr(request.module, "UP_EXTRA_ARGS", ()))  # a test module may ask for e.g. --engine-user
    proc = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port), "--agent-path", str(STANDIN_BIN),
                             *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = Stack(f"http://127.0.0.1:{port}", tmp, env, proc)
    try:
        wait_for(lambda: _up(stack.base_url), 60, what="the server")
        stack.creds = json.loads(stack.manage("bootstrap", "--email", "e2e@example.com", "--team", "acme",
                                              "--project", "demo", "--json"))
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        drop()


def _up(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
