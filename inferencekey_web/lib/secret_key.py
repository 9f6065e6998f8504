"""The embedded default's SECRET_KEY: random, generated once into the data dir, readable only by us.

There is no public development key: sessions, password-reset links and the key that seals
workload secrets (`lib/sealing.py`) would all be forgeable with one.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_NAME = "secret_key"


def data_dir_secret_key(data_dir: Path) -> str:
    """The key in `data_dir/secret_key`, created (mode 0600) on first use. Several processes of the
    stack start at once: the file is written aside and linked into place, so exactly one wins."""
    path = Path(data_dir) / FILE_NAME
    if not path.exists():
        tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(64) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()
