"""One engine process: launch, probe, warm up, restart with backoff, stop (PROTOCOL.md §3).

Engines run in their own session (pgid == pid). While the agent is alive every engine is its
child: exits are detected with ``waitid(WNOWAIT)`` so the zombie leader keeps the process group id
pinned while leftovers of the group are killed, and only then is the child reaped. Engines
adopted from a previous agent run are watched through /proc (pid + start time).
"""


from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import httpx

from . import logs, ports
from .state import (
    group_members,
    pid_alive,
    proc_start_time,
    signal_group,
    try_reap,
)

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger("inferencekey.agent.supervisor")

STARTING = "starting"
READY = "ready"
UNHEALTHY = "unhealthy"
BACKOFF = "backoff"
FAILED = "failed"
STOPPING = "stopping"
STOPPED = "stopped"
DRAINING = "draining"  # removed while serving: no longer routed to, finishing in-flight requests

_RUNNING = object()  # _poll_exit() sentinel: the process is still running
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class LaunchError(Exception):
    """The replica cannot be started as specified (missing binary, bad spec)."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "engine exited (exit code unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"engine killed by {name} (exit code {code})"
    return f"engine exited with code {code}"


STARTING_PROBE_S = 0.1
DRAIN_POLL_S = 0.2


class ReplicaRunner:
    """One replica id: its engine process, health state and restart policy."""

    def __init__(self, sup: Supervisor, replica_id: str, spec: dict | None = None, adopted: dict | None = None):
        self.sup = sup
        self.id = replica_id
        self.log_path = logs.log_path(sup.state_dir, replica_id)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"replica-{replica_id}", daemon=True)
        self._http: httpx.Client | None = None

        # desired state (written by the supervisor, read by the thread)
        self._spec = spec
        self._removing = False
        self._remove_reason = "removed from the desired list"
        self._detach = False
        self._done = False
        self.reported_final = False

        # the running process
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self._pgid: int | None = None
        self._start_time: int | None = None
        self._port: int | None = None
        self._running_hash: str | None = None
        self._adopted = False
        self._term_deadline: float | None = None
        self._kill_timer: threading.Timer | None = None
        self._drain_started: float | None = None  # monotonic time a drain began (see request_remove)
        self._probe_dropped_at: float | None = None

        # reported state and restart policy
        self.state = STARTING
        self.message = "waiting to start"
        self.restarts = 0
        self.exit_code: int | None = None
        self._failures = 0
        self._next_start_at = 0.0
        self._relaunch = False
        self._ready_since: float | None = None
        self._probe_failures = 0
        self._start_deadline = 0.0

        if adopted:
            self._adopted = True
            self._pid = adopted["pid"]
            self._pgid = adopted.get("pgid") or adopted["pid"]
            self._start_time = adopted.get("start_time")
            self._port = adopted.get("port")
            self._running_hash = adopted.get("spec_hash")
            self._start_deadline = time.monotonic() + sup.start_timeout
            self.message = f"adopted running engine (pid {self._pid}); probing health"

    # ------------------------------------------------------------------ supervisor API

    def start(self) -> None:
        self._thread.start()

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done

    def update_spec(self, spec: dict) -> bool:
        """Make ``spec`` the desired spec. False if this runner already finished (make a new one)."""
        with self._lock:
            if self._done:
                return False
            old_hash = self._spec.get("spec_hash") if self._spec else None
            self._spec = spec
            self._removing = False
            if self._drain_started is not None:  # wanted again before the drain ended: keep serving
                self._drain_started = None
                if self.state == DRAINING:
                    self.state = READY
                    self.message = "health check passed (drain cancelled: the replica is wanted again)"
            new_hash = spec.get("spec_hash")
            if self._pid is not None and self._running_hash != new_hash:
                log.info("replica %s: spec_hash %s -> %s, restarting", self.id, self._running_hash, new_hash)
                self._begin_stop_locked()
            elif self._pid is None and old_hash != new_hash:
                # a new spec deserves an immediate attempt (e.g. after `failed`)
                self._next_start_at = 0.0
                self._failures = 0
        self._wake.set()
        return True

    def request_remove(self, reason: str = "removed from the desired list", drain: bool = True) -> None:
        """Stop the engine and finish. A serving engine is drained first (``drain``): it keeps running
        for ``sup.drain_grace`` seconds (the gateways drop it from their route tables meanwhile), then
        until no client connection is open, at most ``sup.drain_timeout`` seconds, then it is stopped."""
        with self._lock:
            if self._done or (self._removing and (drain or self._drain_started is None)):
                return
            self._removing = True
            self._remove_reason = reason
            if self._pid is None or self._term_deadline is not None:
                pass
            elif drain and self.state in (READY, UNHEALTHY) and self.sup.drain_timeout > 0:
                self._drain_started = time.monotonic()
                self.state = DRAINING
                self.message = f"draining ({reason}): finishing in-flight requests"
            else:
                self._drain_started = None
                self._begin_stop_locked()
        self._wake.set()

    def detach(self) -> None:
        """Stop supervising but leave the engine running (it stays in the state file for adoption)."""
        with self._lock:
            self._detach = True
        self._wake.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> dict:
        with self._lock:
            spec_hash = self._running_hash if self._pid is not None else None
            if spec_hash is None:
                spec_hash = self._spec.get("spec_hash") if self._spec else self._running_hash
            port = self._port
            if port is None and self._spec:
                port = self._spec.get("port")
            snap = {
                "id": self.id,
                "state": self.state,
                "pid": self._pid,
                "port": port,
                "restarts": self.restarts,
                "exit_code": self.exit_code,
                "message": self.message,
                "spec_hash": spec_hash,
            }
        snap["log_tail"] = logs.tail(self.log_path)
        return snap

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        self._http = httpx.Client(trust_env=False)
        try:
            self._loop()
        except Exception as exc:  # a bug here must not leave an unmanaged engine behind
            log.exception("replica %s: supervisor thread crashed", self.id)
            try:
                self._terminate("agent error")
            except Exception:
                log.exception("replica %s: could not stop engine after crash", self.id)
            with self._lock:
                self.state = FAILED
                self.message = f"agent error: {type(exc).__name__}: {exc}"
        finally:
            self._http.close()
            with self._lock:
                detached = self._detach
            if not detached:  # before `done`: a runner that replaces this one claims its own port
                self.sup.release_port(self.id)
            with self._lock:
                self._done = True

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
        self._wake.clear()

    def _loop(self) -> None:
        while True:
            with self._lock:
                removing, detach, spec = self._removing, self._detach, self._spec
                has_proc = self._pid is not None
                stop_pending = self._term_deadline is not None
                hash_changed = has_proc and spec is not None and spec.get("spec_hash") != self._running_hash
                draining = removing and self._drain_started is not None and not stop_pending
            if detach:
                log.info("replica %s: detached (engine pid %s left running)", self.id, self._pid)
                return
            if has_proc and draining:
                code = self._poll_exit()
                if code is not _RUNNING:
                    self._clear_process(code)
                    continue
                if not self._drain_finished():
                    self._sleep(DRAIN_POLL_S)
                    continue
            if has_proc:
                if removing or stop_pending or hash_changed:
                    reason = self._remove_reason if removing else "spec changed"
                    self._terminate(reason)
                    with self._lock:
                        if not self._removing:
                            self._next_start_at = 0.0
                            self._failures = 0
                            self._relaunch = False
                            self.state = STARTING
                            self.message = "restarting with the new spec"
                    continue
                code = self._poll_exit()
                if code is not _RUNNING:
                    self._on_unexpected_exit(code)
                    continue
                logs.rotate_if_needed(self.log_path)
                if self.state == STARTING:
                    self._check_starting()
                else:
                    self._check_ready()
                # Probe a starting engine often: readiness latency is what users wait on.
                self._sleep(min(self.sup.probe_interval, STARTING_PROBE_S) if self.state == STARTING else self.sup.probe_interval)
                continue
            if removing:
                with self._lock:
                    self.state = STOPPED
                    self.message = f"stopped ({self._remove_reason})"
                log.info("replica %s: stopped", self.id)
                return
            if spec is None:  # adopted engine died before the control plane told us its spec
                self._sleep(self.sup.probe_interval)
                continue
            wait = self._next_start_at - time.monotonic()
            if wait > 0:
                self._sleep(min(wait, 5.0))
                continue
            self._launch(spec)

    def _drain_finished(self) -> bool:
        """Drain (request_remove): past the grace period and no client connection left, or timed out."""
        with self._lock:
            started, port = self._drain_started, self._port
        if started is None:
            return True
        if self._probe_dropped_at != started and self._http is not None:
            # Our own probe connection must not count as a client: drop it (no probes while draining).
            self._http.close()
            self._http = httpx.Client(trust_env=False)
            self._probe_dropped_at = started
        elapsed = time.monotonic() - started
        if elapsed < self.sup.drain_grace:
            return False
        if elapsed >= self.sup.drain_timeout:
            log.info("replica %s: drain timeout (%gs) reached; stopping", self.id, self.sup.drain_timeout)
            return True
        open_connections = ports.established_connections(port) if port else None
        return not open_connections

    # ------------------------------------------------------------------ launching

    def _launch(self, spec: dict) -> None:
        try:
            spec, port, moved_from = self._with_free_port(spec)
            argv = self.sup.resolve_argv(spec)
            env = self.sup.build_env(spec)
        except (LaunchError, TypeError, ValueError) as exc:
            msg = str(exc) if isinstance(exc, LaunchError) else f"invalid spec: {exc}"
            with self._lock:
                first = self.state != FAILED or self.message != msg
                self._schedule_retry(msg, FAILED)
            if first:
                log.error("replica %s: %s", self.id, msg)
                logs.write_marker(self.log_path, f"cannot start: {msg}")
            return
        with self._lock:
            if self._removing or self._detach:
                return
            fh = logs.open_for_engine(self.log_path)
            try:
                fh.write(f"[agent {time.strftime('%Y-%m-%dT%H:%M:%S')}] starting: {' '.join(argv)}\n".encode())
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=env["HOME"],
                    start_new_session=True,
                    close_fds=True,
                    **self.sup.popen_identity(),
                )
            except OSError as exc:
                msg = f"cannot start {argv[0]}: {exc.strerror or exc}"
                self._schedule_retry(msg, FAILED)
                log.error("replica %s: %s", self.id, msg)
                return
            finally:
                fh.close()
            if self._relaunch:
                self.restarts += 1
                self._relaunch = False
            if moved_from is not None:
                note = f"port {moved_from} is in use on this host; the engine listens on {port} instead"
                log.info("replica %s: %s", self.id, note)
                fh_note = logs.open_for_engine(self.log_path)
                try:
                    fh_note.write(f"[agent {time.strftime('%Y-%m-%dT%H:%M:%S')}] {note}\n".encode())
                finally:
                    fh_note.close()
            self._proc = proc
            self._pid = proc.pid
            self._pgid = proc.pid  # start_new_session: the engine leads its own session and group
            self._start_time = proc_start_time(proc.pid)
            self._port = port
            self._running_hash = spec.get("spec_hash")
            self._adopted = False
            self._probe_failures = 0
            self._ready_since = None
            self._start_deadline = time.monotonic() + self.sup.start_timeout
            self.state = STARTING
            self.message = f"started (pid {proc.pid}); waiting for the health check"
            self.sup._record(
                self.id,
                {
                    "pid": proc.pid,
                    "pgid": proc.pid,
                    "start_time": self._start_time,
                    "port": port,
                    "spec_hash": self._running_hash,
                },
            )
        log.info("replica %s: started pid %s: %s", self.id, proc.pid, " ".join(argv))

    def _with_free_port(self, spec: dict) -> tuple[dict, int, int | None]:
        """The spec with a port that is free on this host for real (PROTOCOL.md §3): the control
        plane's choice (or the port this replica used last), else the next free one, substituted
        into argv and env. Returns (spec, port, the control plane's port if it was moved, else None)."""
        wanted = int(spec.get("port"))
        port = self.sup.claim_port(self.id, [self._port, wanted])
        if port is None:
            raise LaunchError("no free port on this host for the engine")
        if port == wanted:
            return spec, port, None
        argv, env = ports.substitute_port(list(spec.get("argv") or []), dict(spec.get("env") or {}), wanted, port)
        return {**spec, "argv": argv, "env": env}, port, (wanted if port != self._port else None)

    def _schedule_retry(self, reason: str, state: str) -> None:
        """Record a failure and when to try again (1 s, 2 s, 4 s … capped). Caller holds the lock."""
        now = time.monotonic()
        if self._ready_since is not None and now - self._ready_since >= self.sup.backoff_reset_s:
            self._failures = 0
        self._failures += 1
        delay = min(self.sup.backoff_cap, self.sup.backoff_base * (2 ** (self._failures - 1)))
        self._next_start_at = now + delay
        self._ready_since = None
        self.state = state
        if state == BACKOFF:
            self._relaunch = True
            self.message = f"{reason}; restarting in {delay:g}s"
        else:
            self.message = reason

    # ------------------------------------------------------------------ health

    def _url(self, path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        return f"http://127.0.0.1:{self._port}{path}"

    def _probe(self) -> tuple[bool, str]:
        spec = self._spec or {}
        path = spec.get("health_path") or "/health"
        try:
            timeout = self.sup.probe_timeout
            resp = self._http.get(self._url(path), timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)))
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}"
        if resp.status_code == 200:
            return True, "HTTP 200"
        return False, f"HTTP {resp.status_code}"

    def _check_starting(self) -> None:
        ok, detail = self._probe()
        if not ok:
            if time.monotonic() > self._start_deadline:
                msg = f"engine not healthy within {self.sup.start_timeout:g}s (last probe: {detail})"
                log.warning("replica %s: %s", self.id, msg)
                self._terminate("start timeout")
                with self._lock:
                    self._schedule_retry(msg, BACKOFF)
                logs.write_marker(self.log_path, self.message)
            else:
                with self._lock:
                    if self._adopted:
                        self.message = f"adopted engine (pid {self._pid}); waiting for the health check ({detail})"
                    else:
                        self.message = f"starting (pid {self._pid}); health check: {detail}"
            return
        if not self._owns_port():
            msg = f"port {self._port} answers, but not from this engine: another process holds it"
            log.warning("replica %s: %s", self.id, msg)
            logs.write_marker(self.log_path, msg)
            self._terminate("its port is taken by another process")
            with self._lock:
                self._schedule_retry(msg, BACKOFF)
            return
        if not self._adopted:
            error = self._run_warmup()
            if error is None:  # aborted: a stop was requested meanwhile
                return
            if error:
                log.warning("replica %s: %s", self.id, error)
                logs.write_marker(self.log_path, error)
                self._terminate("warmup failed")
                with self._lock:
                    self._schedule_retry(error, BACKOFF)
                return
        with self._lock:
            if self._term_deadline is not None or self._pid is None:
                return
            self.state = READY
            self.message = "health check passed"
            self._ready_since = time.monotonic()
            self._probe_failures = 0
        log.info("replica %s: ready (pid %s, port %s)", self.id, self._pid, self._port)
        logs.write_marker(self.log_path, "ready: health check passed")

    def _owns_port(self) -> bool:
        """Whether every socket listening on our port belongs to this engine's session, so the
        health check that just passed was answered by this engine (True when /proc cannot tell)."""
        with self._lock:
            pgid, port = self._pgid, self._port
        if pgid is None or port is None:
            return False
        return ports.listener_owned_by(pgid, port) is not False

    def _run_warmup(self) -> str | None:
        """Run the spec's warmup requests in order. '' on success, an error message, or None if aborted."""
        warmup = (self._spec or {}).get("warmup") or []
        total = len(warmup)
        for i, req in enumerate(warmup, 1):
            with self._lock:
                if self._term_deadline is not None or self._removing or self._detach:
                    return None
                if not isinstance(req, dict):
                    return f"warmup {i}/{total} is not an object"
                method = str(req.get("method") or "POST").upper()
                path = str(req.get("path") or "/")
                self.message = f"warmup {i}/{total}: {method} {path}"
            logs.write_marker(self.log_path, f"warmup {i}/{total}: {method} {path}")
            kwargs: dict = {}
            if "json" in req:
                kwargs["json"] = req["json"]
            elif "body" in req:
                kwargs["content"] = str(req["body"]).encode()
            if isinstance(req.get("headers"), dict):
                kwargs["headers"] = {str(k): str(v) for k, v in req["headers"].items()}
            timeout = float(req.get("timeout_s") or self.sup.warmup_timeout)
            try:
                resp = self._http.request(
                    method, self._url(path), timeout=httpx.Timeout(timeout, connect=10.0), **kwargs
                )
            except httpx.HTTPError as exc:
                with self._lock:
                    if self._term_deadline is not None or self._removing or self._detach:
                        return None
                return f"warmup {i}/{total} {method} {path} failed: {type(exc).__name__}: {exc}"
            if not 200 <= resp.status_code < 300:
                return f"warmup {i}/{total} {method} {path} returned HTTP {resp.status_code}: {resp.text[:200]}"
        return ""

    def _check_ready(self) -> None:
        ok, detail = self._probe()
        with self._lock:
            if self._pid is None or self._term_deadline is not None:
                return
            if ok:
                self._probe_failures = 0
                if self.state == UNHEALTHY:
                    self.state = READY
                    self.message = "health check passed"
                    self._ready_since = time.monotonic()
                    log.info("replica %s: healthy again", self.id)
                elif (
                    self._ready_since is not None
                    and self._failures
                    and time.monotonic() - self._ready_since >= self.sup.backoff_reset_s
                ):
                    self._failures = 0
                return
            self._probe_failures += 1
            if self.state == READY and self._probe_failures >= self.sup.unhealthy_after:
                self.state = UNHEALTHY
                self._ready_since = None
                self.message = f"{self._probe_failures} consecutive health checks failed (last: {detail})"
                log.warning("replica %s: %s", self.id, self.message)
            elif self.state == UNHEALTHY:
                self.message = f"{self._probe_failures} consecutive health checks failed (last: {detail})"

    # ------------------------------------------------------------------ process lifecycle

    def _poll_exit(self):
        """``_RUNNING`` while the engine runs; else its exit code (None if unknown), reaped."""
        with self._lock:
            proc, pid, pgid, start_time = self._proc, self._pid, self._pgid, self._start_time
        if pid is None:
            return None
        if proc is not None:
            try:
                res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                res = True  # already reaped elsewhere
            if res is None:
                return _RUNNING
            # The leader is a zombie: its pgid cannot be reused yet, so killing leftovers is safe.
            signal_group(pgid, signal.SIGKILL)
            try:
                return proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return _RUNNING
        if pid_alive(pid, start_time):
            return _RUNNING
        reaped, code = try_reap(pid)
        if group_members(pgid):
            signal_group(pgid, signal.SIGKILL)
        return code if reaped else None

    def _begin_stop_locked(self) -> None:
        """SIGTERM the engine's process group now (caller holds the lock); the thread finishes the job."""
        if self._pid is None or self._term_deadline is not None:
            return
        self._term_deadline = time.monotonic() + self.sup.stop_timeout
        self.state = STOPPING
        self.message = "stopping (SIGTERM sent)"
        signal_group(self._pgid, signal.SIGTERM)
        # Backstop in case the thread is stuck in a long warmup request: SIGKILL slightly later.
        pgid, gen_pid = self._pgid, self._pid
        timer = threading.Timer(self.sup.stop_timeout + 1.0, self._backstop_kill, args=(gen_pid, pgid))
        timer.daemon = True
        self._kill_timer = timer
        timer.start()

    def _backstop_kill(self, pid: int, pgid: int) -> None:
        with self._lock:
            if self._pid == pid and self._proc is not None and self._proc.returncode is None:
                log.warning("replica %s: pid %s still running after stop timeout; SIGKILL", self.id, pid)
                signal_group(pgid, signal.SIGKILL)

    def _terminate(self, reason: str) -> None:
        """Stop the engine: SIGTERM to its group, SIGKILL after stop_timeout, reap, forget it."""
        with self._lock:
            if self._pid is None:
                return
            self._begin_stop_locked()
            self.state = STOPPING
            self.message = f"stopping ({reason})"
            deadline = self._term_deadline
            pid, pgid = self._pid, self._pgid
        log.info("replica %s: stopping pid %s (%s)", self.id, pid, reason)
        logs.write_marker(self.log_path, f"stopping ({reason})")
        code = self._poll_exit()
        while code is _RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
            code = self._poll_exit()
        if code is _RUNNING:
            log.warning("replica %s: pid %s ignored SIGTERM for %gs; SIGKILL", self.id, pid, self.sup.stop_timeout)
            signal_group(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10.0
            while code is _RUNNING and time.monotonic() < kill_deadline:
                time.sleep(0.05)
                code = self._poll_exit()
        if code is _RUNNING:
            log.error("replica %s: pid %s survived SIGKILL; keeping it in the state file", self.id, pid)
            return
        self._clear_process(code)
        logs.write_marker(self.log_path, f"stopped: {_describe_exit(code)}")

    def _clear_process(self, code) -> None:
        with self._lock:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
                self._kill_timer = None
            self._proc = None
            self._pid = None
            self._pgid = None
            self._start_time = None
            self._running_hash = None
            self._term_deadline = None
            self._drain_started = None
            self._adopted = False
            self.exit_code = code
            self.sup._record(self.id, None)

    def _on_unexpected_exit(self, code) -> None:
        with self._lock:
            was_ready = self.state in (READY, UNHEALTHY)
            requested = self._term_deadline is not None
        self._clear_process(code)
        if requested:  # it exited on our SIGTERM (removal / spec change raced with the exit check)
            logs.write_marker(self.log_path, f"stopped: {_describe_exit(code)}")
            with self._lock:
                self._next_start_at = 0.0
                if not self._removing:
                    self.state = STARTING
                    self.message = "restarting with the new spec"
            return
        reason = _describe_exit(code) + ("" if was_ready else " before becoming healthy")
        with self._lock:
            self._schedule_retry(reason, BACKOFF)
            msg = self.message
        log.warning("replica %s: %s", self.id, msg)
        logs.write_marker(self.log_path, msg)
