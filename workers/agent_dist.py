"""The worker agent as one file, served by the control plane: `GET /agent/inferencekey-agent.pyz`.

A GPU host needs only `python3` (3.11+) and `curl`: no package index, no pip, no venv. The file is a
zipapp (PEP 441) of `workers/agent/` (standard library + httpx, nothing from Django) with httpx and
its pure-Python dependencies copied in from this server's own environment, so the agent always
matches the server that hands it out. Run it as `python3 inferencekey-agent.pyz --server … `.

Built once per process, byte-for-byte reproducible (fixed timestamps and order), served with an
ETag.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import zipfile
from pathlib import Path

from django.http import HttpResponse, HttpResponseNotModified
from django.views.decorators.http import require_safe

from .agent import AGENT_VERSION

FILE_NAME = "inferencekey-agent.pyz"
# httpx and everything it imports at run time; all pure Python. The optional ones (only on older
# Pythons) are copied when this environment has them.
REQUIRED = ("httpx", "httpcore", "h11", "anyio", "idna", "certifi")
OPTIONAL = ("sniffio", "typing_extensions", "exceptiongroup")
MAIN = b"import sys\n\nfrom workers.agent.cli import main\n\nsys.exit(main())\n"
_EPOCH = (2020, 1, 1, 0, 0, 0)


def _package_files(name: str, required: bool):
    spec = importlib.util.find_spec(name)
    if spec is None:
        if required:
            raise RuntimeError(f"cannot build the agent: {name} is not installed on the server")
        return
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo", ".so"):
                yield f"{name}/{path.relative_to(root).as_posix()}", path.read_bytes()
    elif spec.origin and spec.origin.endswith(".py"):
        yield f"{name}.py", Path(spec.origin).read_bytes()


def _files():
    agent = Path(__file__).resolve().parent / "agent"
    yield "__main__.py", MAIN
    yield "workers/__init__.py", b""
    for path in sorted(agent.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield f"workers/agent/{path.relative_to(agent).as_posix()}", path.read_bytes()
    for name in REQUIRED:
        yield from _package_files(name, required=True)
    for name in OPTIONAL:
        yield from _package_files(name, required=False)


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The zipapp's bytes (a `#!/usr/bin/env python3` line, then the zip)."""
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in _files():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buf.getvalue()


@require_safe
def download(request):
    data = build()
    etag = f'"{AGENT_VERSION}-{hashlib.sha256(data).hexdigest()[:16]}"'
    if request.headers.get("If-None-Match") == etag:
        return HttpResponseNotModified(headers={"ETag": etag})
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{FILE_NAME}"'
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"  # revalidate: a server upgrade changes the agent
    return response
