"""Helpers for benchmarks: a throwaway data dir, Django set up on it, a uvicorn server process."""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_django(data_dir: str | None = None) -> str:
    data_dir = data_dir or tempfile.mkdtemp(prefix="ik-bench-")
    os.environ.setdefault("INFERENCEKEY_DATA_DIR", data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferencekey_web.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return os.environ["INFERENCEKEY_DATA_DIR"]


def start_server(port: int, workers: int = 1) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "inferencekey_web.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", str(workers)],
        cwd=ROOT, env={**os.environ, "DB_CONN_MAX_AGE": os.environ.get("DB_CONN_MAX_AGE", "60")},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def start_up_stack(prefix: str, extra_env: dict[str, str] | None = None,
                   database_url: str | None = None) -> tuple[subprocess.Popen, str, int, dict[str, str]]:
    """`manage.py up` (stand-in engine as `vllm`) in a fresh data dir on a free port, logging to
    `<data dir>/up.log`. The database is `database_url`, else `BENCH_DATABASE_URL`, else SQLite."""
    data_dir = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    env = {**os.environ, "INFERENCEKEY_DATA_DIR": data_dir, "INFERENCEKEY_BASE_URL": f"http://127.0.0.1:{port}",
           **(extra_env or {})}
    env.pop("DATABASE_URL", None)
    database_url = database_url if database_url is not None else os.environ.get("BENCH_DATABASE_URL", "")
    if database_url:
        env["DATABASE_URL"] = database_url
    log = open(Path(data_dir) / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "manage.py", "up", "--port", str(port),
                           "--agent-path", str(ROOT / "tests" / "standin_engine" / "bin")],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return up, data_dir, port, env


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return statistics.median(ms), ms[int(len(ms) * 0.95) - 1]
