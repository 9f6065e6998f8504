"""Engine log files: ``<state_dir>/logs/<replica_id>.log`` with copy-truncate rotation."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("inferencekey.agent.logs")

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
TAIL_BYTES = 4096


def log_path(state_dir: Path, replica_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in replica_id) or "replica"
    return Path(state_dir) / "logs" / f"{safe}.log"


def open_for_engine(path: Path):
    """Binary append handle to hand to the engine as stdout/stderr (O_APPEND survives truncation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab", buffering=0)


def write_marker(path: Path, text: str) -> None:
    """Append an agent line to the engine log (so the log tail explains what the agent did)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab", buffering=0) as fh:
            fh.write(f"[agent {stamp}] {text}\n".encode("utf-8", "replace"))
    except OSError as exc:
        log.debug("cannot write to %s: %s", path, exc)


def rotate_if_needed(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> bool:
    """Copy-truncate rotation: log → log.1 (log.1 → log.2 …, ``backups`` kept), then truncate.

    The engine keeps writing to its O_APPEND descriptor, which continues at the new end of file.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    try:
        for i in range(backups, 1, -1):
            older = path.with_name(f"{path.name}.{i - 1}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{i}"))
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
        os.truncate(path, 0)
    except OSError as exc:
        log.warning("log rotation of %s failed: %s", path, exc)
        return False
    return True


def tail(path: Path, max_bytes: int = TAIL_BYTES) -> str:
    """Last ``max_bytes`` of the log, decoded leniently, starting at a line boundary if possible."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - max_bytes)
            fh.seek(start)
            data = fh.read(max_bytes)
    except OSError:
        return ""
    if start > 0:
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1 :]
    return data.decode("utf-8", "replace")
