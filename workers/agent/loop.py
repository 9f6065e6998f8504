"""The agent main loop: register once, then heartbeat + converge every ``heartbeat_interval_s``."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import AGENT_VERSION
from .client import ControlPlaneClient, ControlPlaneError, Rejected, Unauthorized
from .gpus import GpuDetector, parse_simulated_gpu
from .state import load_credentials, revoke_credentials, save_credentials
from .supervisor import DRAINING, STARTING, STOPPING, Supervisor

log = logging.getLogger("inferencekey.agent")

EXIT_OK = 0
EXIT_CONFIG = 2  # bad configuration, join token rejected
EXIT_REVOKED = 3  # heartbeat got 401: worker deleted / credential revoked

DEFAULT_INTERVAL = 3.0
WAKE_CHECK_S = 0.05
MAX_INTERVAL = 300.0


@dataclass
class AgentConfig:
    server: str
    state_dir: Path
    join_token: str | None = None
    name: str = field(default_factory=socket.gethostname)
    address: str = "127.0.0.1"
    cpu_only: bool = False
    labels: dict = field(default_factory=dict)
    stop_timeout: float = 10.0
    drain_timeout: float = 60.0
    start_timeout: float = 600.0
    vllm_versions_dir: str | None = None
    stop_engines_on_exit: bool = False
    once: bool = False
    engine_user: str | None = None  # None: IK_ENGINE_USER, else engines run as the agent's user
    engine_env: tuple[str, ...] | None = None  # extra variables passed on to engines (None: IK_ENGINE_ENV)
    simulate_gpu: str | None = None  # "NAME:VRAM_MB": report this one GPU (gpus.parse_simulated_gpu)


def memory_mb() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


class Agent:
    """Register + heartbeat loop around a :class:`Supervisor`.

    ``run()`` returns an exit code; ``request_stop()`` (signal handler, tests) ends it at the next
    wait. Collaborators are injectable: ``supervisor``, ``gpu_detector`` (callable returning the
    GPU list) and ``client``.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        supervisor: Supervisor | None = None,
        gpu_detector=None,
        client: ControlPlaneClient | None = None,
        min_interval: float = 0.05,
    ):
        self.config = config
        self.config.server = config.server.rstrip("/")
        self.state_dir = Path(config.state_dir)
        self.supervisor = supervisor
        if gpu_detector is None and config.simulate_gpu:
            simulated = parse_simulated_gpu(config.simulate_gpu)
            gpu_detector = lambda: [dict(simulated)]  # noqa: E731
        self._detect = gpu_detector or GpuDetector().detect
        self.client = client or ControlPlaneClient(self.config.server)
        self.min_interval = min_interval
        self.interval = DEFAULT_INTERVAL
        self.worker_id: str | None = None
        self._token: str | None = None
        self._stop = threading.Event()
        self._remote_state: str | None = None
        self._failures = 0

    # ------------------------------------------------------------------ helpers

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _gpus(self) -> list[dict]:
        if self.config.cpu_only:
            return []
        try:
            return list(self._detect())
        except Exception:
            log.exception("GPU detection failed")
            return []

    def _set_interval(self, value) -> None:
        try:
            interval = float(value)
        except (TypeError, ValueError):
            return
        if interval != interval:  # NaN
            return
        self.interval = max(self.min_interval, min(interval, MAX_INTERVAL))

    def _set_drain_grace(self, value) -> None:
        """The control plane says how long gateways may still route to a removed replica."""
        try:
            grace = float(value)
        except (TypeError, ValueError):
            return
        if grace == grace and self.supervisor is not None:  # not NaN
            self.supervisor.drain_grace = max(0.0, min(grace, 60.0))

    # ------------------------------------------------------------------ register

    def _credentials(self, gpus: list[dict]) -> bool:
        creds = load_credentials(self.state_dir)
        if creds and creds["server"].rstrip("/") != self.config.server:
            if self.config.join_token:
                log.warning(
                    "credentials in %s are for %s, not %s: registering again",
                    self.state_dir,
                    creds["server"],
                    self.config.server,
                )
                creds = None
            else:
                log.warning(
                    "credentials in %s are for %s; using them with %s",
                    self.state_dir,
                    creds["server"],
                    self.config.server,
                )
        if creds:
            self.worker_id, self._token = creds["worker_id"], creds["worker_token"]
            log.info("using stored credentials for worker %s", self.worker_id)
            return True
        if not self.config.join_token:
            log.error("not registered yet (no %s/credentials.json) and no --join-token given", self.state_dir)
            return False
        return self._register(gpus)

    def _register(self, gpus: list[dict]) -> bool:
        body = {
            "join_token": self.config.join_token,
            "name": self.config.name,
            "hostname": socket.gethostname(),
            "address": self.config.address,
            "agent_version": AGENT_VERSION,
            "cpu_only": bool(self.config.cpu_only or not gpus),
            "cpu_count": os.cpu_count() or 1,
            "memory_mb": memory_mb(),
            "gpus": gpus,
            "labels": dict(self.config.labels),
        }
        delay = 1.0
        while not self.stopping:
            try:
                data = self.client.register(body)
            except Unauthorized as exc:
                log.error("join token rejected by %s: %s", self.config.server, exc)
                return False
            except (ControlPlaneError, Rejected) as exc:
                log.warning("register failed (%s); retrying in %gs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            self.worker_id, self._token = data["worker_id"], data["worker_token"]
            save_credentials(self.state_dir, self.config.server, self.worker_id, self._token)
            self._set_interval(data.get("heartbeat_interval_s", DEFAULT_INTERVAL))
            log.info("registered as worker %s", self.worker_id)
            return True
        return False

    # ------------------------------------------------------------------ heartbeat

    def heartbeat_once(self) -> bool | None:
        """One heartbeat + converge. True on success, False on a transient failure, None on 401."""
        try:
            body = {"gpus": self._gpus(), "agent_version": AGENT_VERSION, "replicas": self.supervisor.report()}
            data = self.client.heartbeat(self._token, body)
        except Unauthorized as exc:
            log.error("heartbeat rejected (401: %s): worker deleted or credential revoked", exc)
            return None
        except (ControlPlaneError, Rejected) as exc:
            self._failures += 1
            log.warning("heartbeat failed (#%d): %s", self._failures, exc)
            return False
        except Exception:
            self._failures += 1
            log.exception("heartbeat failed (#%d)", self._failures)
            return False
        if self._failures:
            log.info("heartbeat ok again after %d failure(s)", self._failures)
            self._failures = 0
        self._set_interval(data.get("heartbeat_interval_s", self.interval))
        self._set_drain_grace(data.get("drain_grace_s"))
        state = data.get("state")
        if state != self._remote_state:
            log.info("control plane says this worker is %s", state)
            self._remote_state = state
        try:
            self.supervisor.converge(data.get("replicas") or [])
        except Exception:
            log.exception("converge failed")
        return True

    def _wait_settled(self) -> None:
        """--once: wait until no replica is starting/stopping any more (bounded)."""
        deadline = time.monotonic() + self.config.start_timeout + self.config.stop_timeout + 5
        while not self.stopping and time.monotonic() < deadline:
            busy = [r for r in self.supervisor.report() if r["state"] in (STARTING, STOPPING, DRAINING)]
            if not busy:
                return
            self._stop.wait(0.2)

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.state_dir, 0o700)
        except OSError:
            pass
        gpus = self._gpus()
        log.info(
            "agent %s starting: server %s, state dir %s, %d GPU(s)%s",
            AGENT_VERSION,
            self.config.server,
            self.state_dir,
            len(gpus),
            " (cpu-only)" if self.config.cpu_only else "",
        )
        try:
            if not self._credentials(gpus):
                return EXIT_OK if self.stopping else EXIT_CONFIG
            if self.supervisor is None:
                self.supervisor = Supervisor(
                    self.state_dir,
                    stop_timeout=self.config.stop_timeout,
                    drain_timeout=self.config.drain_timeout,
                    start_timeout=self.config.start_timeout,
                    vllm_versions_dir=self.config.vllm_versions_dir,
                    gpu_host=bool(gpus),
                    engine_user=self.config.engine_user,
                    engine_env=self.config.engine_env,
                )
            return self._loop()
        finally:
            self.client.close()

    def _signature(self) -> tuple:
        return self.supervisor.states()

    def _wait_next(self, started: float) -> None:
        """Sleep until the next heartbeat is due, or until a replica changes state: a change is
        reported at once, so the control plane learns of `ready` without waiting a full interval."""
        seen = self._signature()
        while not self.stopping:
            remaining = started + self.interval - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, WAKE_CHECK_S))
            if self._signature() != seen and time.monotonic() - started >= self.min_interval:
                return

    def _loop(self) -> int:
        code = EXIT_OK
        try:
            while not self.stopping:
                started = time.monotonic()
                result = self.heartbeat_once()
                if result is None:
                    self.supervisor.stop_all(reason="worker credential revoked (HTTP 401)")
                    revoke_credentials(self.state_dir)
                    code = EXIT_REVOKED
                    return code
                if self.config.once:
                    if result:
                        self._wait_settled()
                        self.heartbeat_once()
                    code = EXIT_OK if result else 1
                    break
                self._wait_next(started)
        finally:
            if code != EXIT_REVOKED:
                stop = self.config.stop_engines_on_exit
                log.info("agent exiting; %s", "stopping engines" if stop else "leaving engines running for adoption")
                self.supervisor.shutdown(stop_engines=stop)
                if self.stopping and not self.config.once:
                    self._say_goodbye(engines_stopped=stop)
        return code

    def _say_goodbye(self, *, engines_stopped: bool) -> None:
        """A clean stop (SIGTERM/SIGINT): tell the control plane, so it marks this worker offline
        and moves its replicas at once rather than after the heartbeat grace (PROTOCOL.md §4)."""
        token = getattr(self, "_token", None)
        if not token:
            return
        try:
            self.client.offline(token, engines_stopped)
            log.info("told the control plane this worker is going offline")
        except Exception as exc:  # best effort: the heartbeat timeout still catches it
            log.warning("could not report going offline: %s", exc)
