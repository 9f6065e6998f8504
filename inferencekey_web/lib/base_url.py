"""Where the running stack is reached: `up` records its base URL in the data dir, so commands run
beside it (`bootstrap`) print the right one whatever `--port` it was started with."""
from __future__ import annotations

import os
from pathlib import Path

FILE_NAME = "base_url"


def record(data_dir: Path, url: str) -> None:
    path = Path(data_dir) / FILE_NAME
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(url.rstrip("/") + "\n")
    os.replace(tmp, path)


def recorded(data_dir: Path) -> str | None:
    try:
        url = (Path(data_dir) / FILE_NAME).read_text().strip()
    except OSError:
        return None
    return url.rstrip("/") or None


def resolve(data_dir: Path, *, flag: str | None, default: str) -> str:
    """--base-url, else INFERENCEKEY_BASE_URL set in the environment, else what `up` recorded,
    else the settings' default."""
    return (flag or os.environ.get("INFERENCEKEY_BASE_URL") or recorded(data_dir) or default).rstrip("/")
