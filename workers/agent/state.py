"""On-disk agent state: credentials, the replica state file, and /proc process helpers."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
from pathlib import Path

log = logging.getLogger("inferencekey.agent.state")

CREDENTIALS_FILE = "credentials.json"
REPLICAS_FILE = "replicas.json"


# --------------------------------------------------------------------------- files


def atomic_write_json(path: Path, data, mode: int = 0o600) -> None:
    """Write JSON to ``path`` atomically (temp file + rename) with the given permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path):
    """Parsed JSON, or None when missing; a corrupt file is logged and treated as missing."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def load_credentials(state_dir: Path) -> dict | None:
    data = read_json(Path(state_dir) / CREDENTIALS_FILE)
    if not isinstance(data, dict):
        return None
    if not all(isinstance(data.get(k), str) and data.get(k) for k in ("server", "worker_id", "worker_token")):
        log.warning("ignoring incomplete %s", CREDENTIALS_FILE)
        return None
    return data


def save_credentials(state_dir: Path, server: str, worker_id: str, worker_token: str) -> None:
    atomic_write_json(
        Path(state_dir) / CREDENTIALS_FILE,
        {"server": server, "worker_id": worker_id, "worker_token": worker_token},
        mode=0o600,
    )


def revoke_credentials(state_dir: Path) -> None:
    """Move a rejected credential aside so a later start can register again with a join token."""
    path = Path(state_dir) / CREDENTIALS_FILE
    try:
        os.replace(path, path.with_name("credentials.revoked.json"))
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- /proc


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    close = raw.rfind(")")
    if close < 0:
        return None
    return raw[close + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None if gone."""
    fields = _read_stat(pid)
    if not fields or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except ValueError:
        return None


def proc_state(pid: int) -> str | None:
    fields = _read_stat(pid)
    return fields[0] if fields else None


def try_reap(pid: int) -> tuple[bool, int | None]:
    """If ``pid`` is our child and has exited, reap it. Returns (reaped, exit_code)."""
    try:
        wpid, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False, None
    except OSError:
        return False, None
    if wpid == 0:
        return False, None
    return True, os.waitstatus_to_exitcode(status)


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, has the same /proc start time."""
    if not pid or pid <= 0:
        return False
    try_reap(pid)  # a zombie child of ours would otherwise look alive to kill(pid, 0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = proc_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    if start_time is not None and proc_start_time(pid) != start_time:
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        fields = _read_stat(int(name))
        if not fields or len(fields) < 3:
            continue
        if fields[0] in ("Z", "X", "x"):
            continue
        try:
            if int(fields[2]) == pgid:
                members.append(int(name))
        except ValueError:
            continue
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """killpg that tolerates a vanished group. Returns True if the signal was delivered."""
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.warning("cannot signal process group %s: %s", pgid, exc)
        return False


def kill_group_leftovers(pgid: int) -> int:
    """SIGKILL whatever is left of process group ``pgid``; returns how many members were seen."""
    members = group_members(pgid)
    if members:
        signal_group(pgid, signal.SIGKILL)
    return len(members)
