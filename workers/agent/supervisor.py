"""Engine process supervision (PROTOCOL.md §3).

:class:`Supervisor` owns one :class:`~workers.agent.runner.ReplicaRunner` per replica id. Each
runner has its own thread that launches the engine, probes its health, runs the warmup requests,
restarts it with exponential backoff and stops it (SIGTERM to the process group, SIGKILL after
``stop_timeout``). ``converge()`` and ``report()`` never block on an engine, so the heartbeat loop
stays on time.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import tempfile
import threading
import time
from pathlib import Path

from . import ports, programs
from .runner import (  # noqa: F401  (state names re-exported for the loop and tests)
    _VERSION_RE,
    BACKOFF,
    DRAINING,
    FAILED,
    READY,
    STARTING,
    STOPPED,
    STOPPING,
    UNHEALTHY,
    LaunchError,
    ReplicaRunner,
)
from .state import REPLICAS_FILE, atomic_write_json, kill_group_leftovers, pid_alive, read_json

log = logging.getLogger("inferencekey.agent.supervisor")

# What an engine inherits from the agent's environment: locale, time zone, where programs and the
# GPU stack live, proxies for model downloads. Nothing else (the agent's own secrets, the control
# plane's SECRET_KEY / DATABASE_URL / broker URL under `manage.py up`) ever reaches an engine.
ENGINE_ENV_PASSTHROUGH = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy",
})
ENGINE_ENV_PASSTHROUGH_PREFIXES = ("LC_", "CUDA_", "NVIDIA_")


def _engine_identity(name: str | None) -> pwd.struct_passwd | None:
    """The OS user engines run as: only when the agent is root and an unprivileged user is named."""
    if not name:
        if os.geteuid() == 0:
            log.warning("the agent runs as root and no --engine-user is set: engines run as root")
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"--engine-user {name!r}: no such user on this host") from None
    if user.pw_uid == 0:
        raise ValueError("--engine-user must be an unprivileged user, not root")
    if os.geteuid() != 0:
        if user.pw_uid != os.geteuid():
            log.warning("--engine-user %s ignored: only an agent running as root can switch users", name)
        return None
    return user


class Supervisor:
    """Owns the engine processes of this worker; see the module docstring."""

    def __init__(
        self,
        state_dir,
        *,
        stop_timeout: float = 10.0,
        start_timeout: float = 600.0,
        vllm_versions_dir: str | os.PathLike | None = None,
        gpu_host: bool = False,
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        backoff_reset_s: float = 600.0,
        unhealthy_after: int = 3,
        warmup_timeout: float | None = None,
        drain_grace: float = 2.0,
        drain_timeout: float = 60.0,
        engine_user: str | None = None,
        engine_env: tuple[str, ...] | None = None,
    ):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        # Credentials, replica state and logs are the agent's alone (engines of another OS user
        # cannot even list them).
        for path in (self.state_dir, self.state_dir / "logs"):
            os.chmod(path, 0o700)
        for name in ("credentials.json", REPLICAS_FILE):  # written 0600; older agents left them readable
            if (self.state_dir / name).exists():
                os.chmod(self.state_dir / name, 0o600)
        self.engine_user = _engine_identity(engine_user if engine_user is not None else os.environ.get("IK_ENGINE_USER"))
        if engine_env is None:  # operator-chosen extra variables to pass on (e.g. HF_HOME for a shared cache)
            engine_env = tuple(n.strip() for n in os.environ.get("IK_ENGINE_ENV", "").split(",") if n.strip())
        self.engine_env = frozenset(engine_env)
        self.engine_home = self._make_engine_home()
        # Places no engine argument may name (see programs.path_refusal); `up` adds its data dir.
        self.protected_dirs = [str(self.state_dir)] + [
            d for d in os.environ.get("IK_PROTECT_DIRS", "").split(os.pathsep) if d.strip()
        ]
        self.stop_timeout = float(stop_timeout)
        self.start_timeout = float(start_timeout)
        self.vllm_versions_dir = Path(vllm_versions_dir) if vllm_versions_dir else None
        self.gpu_host = gpu_host
        self.probe_interval = float(probe_interval)
        self.probe_timeout = float(probe_timeout)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.backoff_reset_s = float(backoff_reset_s)
        self.unhealthy_after = int(unhealthy_after)
        self.warmup_timeout = float(warmup_timeout if warmup_timeout is not None else max(self.start_timeout, 60.0))
        # A removed serving engine keeps running `drain_grace` s (gateways stop routing to it), then
        # until its clients are gone, `drain_timeout` s at most (0: stop at once).
        self.drain_grace = float(drain_grace)
        self.drain_timeout = max(float(drain_timeout), self.drain_grace) if drain_timeout > 0 else 0.0
        self._lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._ports: dict[str, int] = {}  # replica id -> the port its engine uses (or will use)
        self._runners: dict[str, ReplicaRunner] = {}
        self._entries: dict[str, dict] = {}
        self._adopt_from_state_file()

    # ------------------------------------------------------------------ state file

    @property
    def state_file(self) -> Path:
        return self.state_dir / REPLICAS_FILE

    def _record(self, replica_id: str, entry: dict | None) -> None:
        with self._state_lock:
            if entry is None:
                if self._entries.pop(replica_id, None) is None:
                    return
            else:
                self._entries[replica_id] = entry
            atomic_write_json(self.state_file, self._entries, mode=0o600)

    def _adopt_from_state_file(self) -> None:
        data = read_json(self.state_file)
        if data is None:
            return
        if not isinstance(data, dict):
            log.warning("ignoring malformed %s", self.state_file)
            data = {}
        adopted: list[ReplicaRunner] = []
        for rid, entry in data.items():
            try:
                pid = int(entry["pid"])
                pgid = int(entry.get("pgid") or pid)
                start_time = entry.get("start_time")
                start_time = int(start_time) if start_time is not None else None
                port = entry.get("port")
                port = int(port) if port is not None else None
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed state entry for %s: %r", rid, entry)
                continue
            if start_time is not None and pid_alive(pid, start_time):
                info = {
                    "pid": pid,
                    "pgid": pgid,
                    "start_time": start_time,
                    "port": port,
                    "spec_hash": entry.get("spec_hash"),
                }
                self._entries[rid] = info
                if port is not None:
                    self._ports[rid] = port
                adopted.append(ReplicaRunner(self, rid, adopted=info))
                log.info("replica %s: adopting running engine pid %s (port %s)", rid, pid, port)
                continue
            if pid_alive(pid):
                # The pid was reused by an unrelated process; the old group cannot still exist
                # (Linux does not reuse a pid while it names a live process group).
                log.info("replica %s: stale state entry (pid %s was reused); dropped", rid, pid)
                continue
            killed = kill_group_leftovers(pgid)
            if killed:
                log.warning(
                    "replica %s: engine pid %s is gone; killed %d leftover process(es) of its group", rid, pid, killed
                )
            else:
                log.info("replica %s: stale state entry (pid %s is gone); dropped", rid, pid)
        with self._state_lock:
            atomic_write_json(self.state_file, self._entries, mode=0o600)
        with self._lock:
            for runner in adopted:
                self._runners[runner.id] = runner
                runner.start()

    # ------------------------------------------------------------------ launch helpers

    def claim_port(self, replica_id: str, preferred: list[int | None]) -> int | None:
        """A port free on this host and promised to no other replica of this agent (see ports.py)."""
        with self._lock:
            taken = {port for rid, port in self._ports.items() if rid != replica_id}
            port = ports.choose_port(preferred, taken)
            if port is not None:
                self._ports[replica_id] = port
            return port

    def release_port(self, replica_id: str) -> None:
        with self._lock:
            self._ports.pop(replica_id, None)

    def _make_engine_home(self) -> Path:
        """HOME (and working directory) of engines: a scratch directory, not the agent's home."""
        if self.engine_user is None:
            home = self.state_dir / "engine-home"
            home.mkdir(exist_ok=True)
            os.chmod(home, 0o700)
            return home
        if os.path.isdir(self.engine_user.pw_dir) and self.engine_user.pw_dir != "/":
            return Path(self.engine_user.pw_dir)
        home = Path(tempfile.gettempdir()) / f"inferencekey-engine-{self.engine_user.pw_uid}"
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, self.engine_user.pw_uid, self.engine_user.pw_gid)
        return home

    def popen_identity(self) -> dict:
        """Extra Popen arguments: the engine user's uid/gid (and no supplementary groups), if any."""
        if self.engine_user is None:
            return {}
        return {"user": self.engine_user.pw_uid, "group": self.engine_user.pw_gid, "extra_groups": []}

    def resolve_argv(self, spec: dict) -> list[str]:
        argv = spec.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise LaunchError("invalid spec: argv must be a non-empty list of strings")
        # Defence in depth: whatever the server sends, only the backend's own program runs here,
        # found by name on this agent's PATH (a path, `sh`, `python -c` … match no prefix).
        backend = str(spec.get("backend") or "")
        prefix = programs.matching_prefix(backend, argv)
        if prefix is None:
            allowed = programs.expected(backend) or "nothing (unknown backend)"
            raise LaunchError(f"refusing to run {argv[0]!r} for the {backend or '?'} backend: this agent runs {allowed}")
        env_values = [str(v) for v in (spec.get("env") or {}).values()] if isinstance(spec.get("env"), dict) else []
        refusal = programs.path_refusal(argv[len(prefix):] + env_values, protected=self.protected_dirs,
                                        cwd=str(self.engine_home))
        if refusal:
            raise LaunchError(f"refusing to start: {refusal}")
        version = spec.get("vllm_version")
        if version:
            if prefix != ("vllm",):
                raise LaunchError("a pinned vllm_version needs the command to start with `vllm`")
            version = str(version)
            if not _VERSION_RE.match(version):
                raise LaunchError(f"invalid vllm_version {version!r}")
            looked = [f"vllm-{version} on PATH"]
            exe = shutil.which(f"vllm-{version}")
            if not exe and self.vllm_versions_dir is not None:
                candidate = self.vllm_versions_dir / version / "bin" / "vllm"
                looked.append(str(candidate))
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    exe = str(candidate)
            if not exe:
                raise LaunchError(f"vLLM {version} is not installed on this worker (looked for {', '.join(looked)})")
            return [os.path.abspath(exe), *argv[1:]]
        exe = shutil.which(argv[0])
        if not exe:
            raise LaunchError(f"command {argv[0]!r} not found on the agent's PATH")
        # Absolute: engines start in their scratch HOME, where a relative PATH entry means nothing.
        return [os.path.abspath(exe), *argv[1:]]

    def build_env(self, spec: dict) -> dict[str, str]:
        """A minimal environment (allow-listed variables of the agent's own, a scratch HOME) plus
        the recipe's and the workload's variables; never the agent's whole environment."""
        env = {
            key: value for key, value in os.environ.items()
            if key in ENGINE_ENV_PASSTHROUGH or key.startswith(ENGINE_ENV_PASSTHROUGH_PREFIXES) or key in self.engine_env
        }
        env["HOME"] = str(self.engine_home)
        if self.engine_user is not None:
            env["USER"] = env["LOGNAME"] = self.engine_user.pw_name
        extra = spec.get("env") or {}
        if not isinstance(extra, dict):
            raise LaunchError("invalid spec: env must be an object")
        for key, value in extra.items():
            refusal = programs.env_refusal(str(key))
            if refusal:
                raise LaunchError(f"refusing to start: {refusal}")
            env[str(key)] = "" if value is None else str(value)
        indices = spec.get("gpu_indices")
        if indices is not None:
            if not isinstance(indices, list):
                raise LaunchError("invalid spec: gpu_indices must be a list")
            if indices:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(i)) for i in indices)
            elif self.gpu_host:
                env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    # ------------------------------------------------------------------ public API

    def converge(self, desired: list[dict]) -> None:
        """Make the running set match ``desired`` (the whole truth). Never blocks on an engine."""
        wanted: dict[str, dict] = {}
        for spec in desired or []:
            rid = spec.get("id") if isinstance(spec, dict) else None
            if not isinstance(rid, str) or not rid:
                log.warning("ignoring desired replica without an id: %r", spec)
                continue
            wanted[rid] = spec
        with self._lock:
            for rid, spec in wanted.items():
                runner = self._runners.get(rid)
                if runner is None or not runner.update_spec(spec):
                    runner = ReplicaRunner(self, rid, spec=spec)
                    self._runners[rid] = runner
                    runner.start()
                    log.info("replica %s: desired (spec_hash %s)", rid, spec.get("spec_hash"))
            for rid, runner in list(self._runners.items()):
                if rid in wanted:
                    continue
                if runner.done:
                    if runner.reported_final:
                        del self._runners[rid]
                else:
                    runner.request_remove()

    def report(self) -> list[dict]:
        """Every replica the agent knows about; a finished one is reported as ``stopped`` until the
        next successful ``converge()`` (i.e. after a heartbeat that carried it went through)."""
        with self._lock:
            runners = list(self._runners.values())
        out = []
        for runner in runners:
            done = runner.done
            snap = runner.snapshot()
            if done:
                runner.reported_final = True
            out.append(snap)
        return out

    def states(self) -> tuple:
        """(replica id, state) pairs, without report()'s bookkeeping: cheap enough to poll."""
        with self._lock:
            runners = list(self._runners.values())
        return tuple(sorted((runner.id, runner.state) for runner in runners))

    def runner(self, replica_id: str) -> ReplicaRunner | None:
        with self._lock:
            return self._runners.get(replica_id)

    def stop_all(self, timeout: float | None = None, reason: str = "agent is stopping all engines") -> None:
        """Stop every engine (in parallel) and wait for them."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.request_remove(reason, drain=False)
        limit = timeout if timeout is not None else self.stop_timeout + 15.0
        deadline = time.monotonic() + limit
        for runner in runners:
            if not runner.join(max(0.0, deadline - time.monotonic())):
                log.error("replica %s: did not stop within %gs", runner.id, limit)

    def shutdown(self, stop_engines: bool = False, timeout: float = 5.0) -> None:
        """Agent exit: stop the engines, or (default) leave them running for adoption."""
        if stop_engines:
            self.stop_all()
            return
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.detach()
        deadline = time.monotonic() + timeout
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
