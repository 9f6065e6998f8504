"""Command line: ``python -m workers.agent`` / console script ``inferencekey-agent``.

Exit codes: 0 stopped by SIGTERM/SIGINT (or ``--once`` done), 1 ``--once`` heartbeat failed,
2 bad usage / join token rejected, 3 credential revoked (heartbeat 401; engines were stopped).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from . import AGENT_VERSION
from .gpus import parse_simulated_gpu
from .loop import EXIT_CONFIG, Agent, AgentConfig


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferencekey-agent",
        description="InferenceKey worker agent: registers with the control plane and supervises inference engines.",
    )
    p.add_argument("--server", default=os.environ.get("IK_SERVER"), help="control plane URL (env IK_SERVER)")
    p.add_argument(
        "--join-token",
        default=os.environ.get("IK_JOIN_TOKEN"),
        help="one-time join token (env IK_JOIN_TOKEN); not needed once registered",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("IK_STATE_DIR"),
        help="credentials, replica state and engine logs (env IK_STATE_DIR)",
    )
    p.add_argument(
        "--name",
        default=os.environ.get("IK_WORKER_NAME") or socket.gethostname(),
        help="worker name (default: hostname)",
    )
    p.add_argument(
        "--address",
        default=os.environ.get("IK_ADDRESS", "127.0.0.1"),
        help="address the gateway uses to reach this host's engines",
    )
    p.add_argument("--cpu-only", action="store_true", help="do not look for GPUs; register as a CPU-only worker")
    p.add_argument(
        "--simulate-gpu",
        default=os.environ.get("IK_SIMULATE_GPU"),
        metavar="NAME:VRAM_MB",
        help="report one simulated GPU instead of running nvidia-smi (the local capacity provider; tests)",
    )
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="worker label (repeatable)")
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=_env_float("IK_STOP_TIMEOUT", 10.0),
        help="seconds between SIGTERM and SIGKILL (default 10)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=_env_float("IK_DRAIN_TIMEOUT", 60.0),
        help="seconds a removed serving engine may take to finish its in-flight requests before it is "
        "stopped (default 60; 0 stops at once)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=_env_float("IK_START_TIMEOUT", 600.0),
        help="seconds for an engine to become healthy (default 600)",
    )
    p.add_argument(
        "--vllm-versions-dir",
        default=os.environ.get("IK_VLLM_VERSIONS_DIR"),
        help="<dir>/<version>/bin/vllm lookup for pinned vLLM versions (env IK_VLLM_VERSIONS_DIR)",
    )
    p.add_argument(
        "--engine-user",
        default=os.environ.get("IK_ENGINE_USER"),
        help="when the agent runs as root: the unprivileged OS user engines run as (env IK_ENGINE_USER)",
    )
    p.add_argument(
        "--engine-env",
        action="append",
        default=[n for n in os.environ.get("IK_ENGINE_ENV", "").split(",") if n.strip()],
        metavar="NAME",
        help="a variable of the agent's environment to pass on to engines, e.g. HF_HOME (repeatable; env "
        "IK_ENGINE_ENV, comma-separated). Engines otherwise get only PATH, locale, TZ, CUDA/NVIDIA and proxies",
    )
    p.add_argument(
        "--stop-engines-on-exit",
        action="store_true",
        help="stop engines on SIGTERM/SIGINT instead of leaving them for adoption",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="register if needed, one heartbeat + converge, wait for replicas to settle, report, exit",
    )
    p.add_argument(
        "--log-level", default=os.environ.get("IK_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING (env IK_LOG_LEVEL)"
    )
    p.add_argument("--version", action="version", version=f"inferencekey-agent {AGENT_VERSION}")
    return p


def _setup_logging(level: str) -> None:
    logger = logging.getLogger("inferencekey")
    logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    if not any(getattr(h, "_ik_agent", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler._ik_agent = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False


def parse_config(argv: list[str] | None) -> AgentConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.server:
        parser.error("--server (or IK_SERVER) is required")
    if not args.state_dir:
        parser.error("--state-dir (or IK_STATE_DIR) is required")
    labels = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--label expects K=V, got {item!r}")
        labels[key.strip()] = value.strip()
    if args.simulate_gpu:
        try:
            parse_simulated_gpu(args.simulate_gpu)
        except ValueError as exc:
            parser.error(f"--simulate-gpu: {exc}")
    if args.stop_timeout < 0 or args.start_timeout <= 0 or args.drain_timeout < 0:
        parser.error("--stop-timeout and --drain-timeout must be >= 0 and --start-timeout > 0")
    if args.engine_user:
        import pwd

        try:
            if pwd.getpwnam(args.engine_user).pw_uid == 0:
                parser.error("--engine-user must be an unprivileged user, not root")
        except KeyError:
            parser.error(f"--engine-user {args.engine_user!r}: no such user on this host")
    _setup_logging(args.log_level)
    return AgentConfig(
        server=args.server,
        join_token=args.join_token or None,
        state_dir=os.path.abspath(os.path.expanduser(args.state_dir)),
        name=args.name,
        address=args.address,
        cpu_only=args.cpu_only,
        labels=labels,
        stop_timeout=args.stop_timeout,
        drain_timeout=args.drain_timeout,
        start_timeout=args.start_timeout,
        vllm_versions_dir=args.vllm_versions_dir,
        stop_engines_on_exit=args.stop_engines_on_exit,
        once=args.once,
        engine_user=args.engine_user or "",
        engine_env=tuple(n.strip() for n in args.engine_env if n.strip()),
        simulate_gpu=args.simulate_gpu or None,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
    except SystemExit as exc:  # argparse: --help / --version (0) or usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    agent = Agent(config)
    log = logging.getLogger("inferencekey.agent")
    previous = {}
    if threading.current_thread() is threading.main_thread():

        def _on_signal(signum, _frame):
            # Event.set() from a signal handler can deadlock on the Event's own lock if the
            # main thread was interrupted inside Event.wait(): hand it to a short-lived thread.
            log.info("received %s; shutting down", signal.Signals(signum).name)
            threading.Thread(target=agent.request_stop, name="agent-stop", daemon=True).start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        return agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
