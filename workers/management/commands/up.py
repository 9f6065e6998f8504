"""`manage.py up [--port PORT]`: the whole one-machine stack in the foreground.

Starts the ASGI server (dashboard, API and gateway), a Celery worker, Celery beat and a local
worker agent registered automatically as a shared, CPU-capable worker; restarts any of them that
dies; stops all of them (engines included) on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from inferencekey_web.lib import base_url as base_url_file
from workers import services
from workers.models import Worker

RESTART_BACKOFF_CAP_S = 30
# What the local agent inherits from `up`'s environment (see _agent).
AGENT_ENV = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
})
AGENT_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "IK_")


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        self.failures = 0
        self.next_start = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Command(BaseCommand):
    help = "Run web + API + gateway, Celery worker and beat, and a local worker agent; Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--no-agent", action="store_true", help="do not start the local worker agent")
        parser.add_argument("--agent-path", default="", help="directories prepended to the agent's PATH (engine binaries)")
        parser.add_argument("--engine-user", default=os.environ.get("IK_ENGINE_USER", ""),
                            help="run as root: the unprivileged OS user the local agent runs engines as")

    def handle(self, *args, port: int, host: str, no_agent: bool, agent_path: str, engine_user: str = "", **options):
        # Everything the stack writes (database, broker messages, agent credentials, logs) is ours alone.
        os.umask(0o077)
        os.chmod(settings.DATA_DIR, 0o700)
        call_command("migrate", interactive=False, verbosity=0)
        base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        # `bootstrap` (another process) prints this one, whatever --port was chosen.
        base_url_file.record(settings.DATA_DIR, os.environ.get("INFERENCEKEY_BASE_URL", base_url))
        env = {**os.environ, "INFERENCEKEY_BASE_URL": os.environ.get("INFERENCEKEY_BASE_URL", base_url),
               # The local agent is on loopback: a fast heartbeat costs little and is how it learns of
               # new replicas (the protocol is pull); state changes are reported at once anyway.
               "INFERENCEKEY_HEARTBEAT_INTERVAL_S": os.environ.get("INFERENCEKEY_HEARTBEAT_INTERVAL_S", "0.5"),
               "INFERENCEKEY_DATA_DIR": str(settings.DATA_DIR), "PYTHONUNBUFFERED": "1"}
        if agent_path:
            # Absolute, so `--agent-path tests/standin_engine/bin` works from any working directory
            # (engines start in a scratch HOME of their own).
            agent_path = os.pathsep.join(os.path.abspath(p) for p in agent_path.split(os.pathsep) if p)
            # The local capacity provider (run by the Celery worker) starts cloud instances' agents
            # with the same engine binaries as the local agent.
            env.setdefault("INFERENCEKEY_AGENT_PATH", agent_path)
        py = sys.executable
        children = [
            Child("web", [py, "-m", "uvicorn", "inferencekey_web.asgi:application", "--host", host, "--port", str(port),
                          "--no-access-log", "--timeout-graceful-shutdown", "5",
                          "--timeout-keep-alive", str(settings.KEEPALIVE_S),
                          # httptools plus a deadline for request heads (slow-header clients are cut off)
                          "--http", "inferencekey_web.lib.http_protocol:HeaderTimeoutProtocol"], env),
            Child("celery-worker", [py, "-m", "celery", "-A", "inferencekey_web", "worker", "--pool", "threads",
                                    "--concurrency", "4", "--loglevel", "INFO", "--without-gossip", "--without-mingle"], env),
            Child("celery-beat", [py, "-m", "celery", "-A", "inferencekey_web", "beat", "--loglevel", "INFO",
                                  "--schedule", str(settings.DATA_DIR / "celerybeat-schedule")], env),
        ]
        if not no_agent and not settings.ALLOW_SHARED_WORKER:
            self.stderr.write("up: not starting the shared local worker: these settings turn it off (every team's "
                              "engines would run as this machine's user); INFERENCEKEY_ALLOW_SHARED_WORKER=1 opts in")
        elif not no_agent:
            children.append(self._agent(py, base_url, env, agent_path, engine_user))
        stopping = False

        def on_signal(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        for child in children:
            child.start()
        self.stdout.write(self.style.SUCCESS(f"InferenceKey is up at {base_url} (dashboard, /api, /endpoint); Ctrl-C stops it"))
        try:
            while not stopping:
                time.sleep(0.5)
                for child in children:
                    if child.proc and child.proc.poll() is not None and not stopping:
                        code = child.proc.returncode
                        child.failures += 1
                        delay = min(RESTART_BACKOFF_CAP_S, 2 ** min(child.failures, 5))
                        self.stderr.write(f"up: {child.name} exited with {code}; restarting in {delay}s")
                        child.proc, child.next_start = None, time.monotonic() + delay
                    if child.proc is None and time.monotonic() >= child.next_start and not stopping:
                        child.start()
        finally:
            self.stdout.write("up: stopping…")
            # Celery first: a reconcile or sweep still running would replace the local cloud
            # instances stopped next (they are agents of this machine too, and stop with it; the
            # capacity sweep replaces them when `up` runs again).
            celery = [c for c in children if c.name.startswith("celery")]
            for child in celery:
                child.stop(timeout=10)
            self._stop_local_instances()
            # Then the agent, so it can stop its engines while the server still answers.
            for child in reversed(children):
                if child not in celery:
                    child.stop(timeout=20 if child.name == "agent" else 10)
        return None

    def _stop_local_instances(self) -> None:
        if settings.CLOUD_PROVIDER != "local":
            return
        import threading

        from workers.providers import get_provider
        from workers.providers.base import MANAGED

        provider = get_provider("local")
        threads = [threading.Thread(target=provider.terminate, args=(info.name,)) for info in provider.list(MANAGED)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    def _agent(self, py: str, base_url: str, env: dict, agent_path: str, engine_user: str = "") -> Child:
        state_dir = Path(settings.DATA_DIR) / "agent"
        state_dir.mkdir(parents=True, exist_ok=True)
        argv = [py, "-m", "workers.agent", "--server", base_url, "--state-dir", str(state_dir), "--name", "local",
                "--stop-engines-on-exit"]
        creds = state_dir / "credentials.json"
        known = False
        if creds.exists():
            try:
                known = Worker.objects.filter(pk=json.loads(creds.read_text()).get("worker_id")).exists()
            except ValueError:
                known = False
        if not known:
            creds.unlink(missing_ok=True)
            # A shared (team-less), CPU-capable worker: on one machine every team may use it.
            issued = services.join_token_create(team=None, name="local", accepts_cpu=True)
            join_token = issued.value
        else:
            join_token = ""
        # The agent gets no control-plane secret (SECRET_KEY, DATABASE_URL, the broker URL …): an
        # allow-list of the environment; the join token by environment, not argv (visible in `ps`).
        agent_env = {k: v for k, v in env.items() if k in AGENT_ENV or k.startswith(AGENT_ENV_PREFIXES)}
        # Engines may not name the data dir (database, secret key, agent credentials) in their arguments.
        agent_env.update(IK_JOIN_TOKEN=join_token, PYTHONUNBUFFERED="1", IK_PROTECT_DIRS=str(settings.DATA_DIR))
        if engine_user:
            agent_env["IK_ENGINE_USER"] = engine_user
        for name in agent_env.get("IK_ENGINE_ENV", "").split(","):  # variables the operator passes to engines
            if name.strip() in env:
                agent_env[name.strip()] = env[name.strip()]
        if agent_path:
            agent_env["PATH"] = agent_path + os.pathsep + agent_env.get("PATH", "")
        return Child("agent", argv, agent_env)
