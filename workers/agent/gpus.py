"""GPU inventory via ``nvidia-smi`` (PROTOCOL.md §1).

Detection is injectable for tests: set ``IK_FAKE_NVIDIA_SMI`` to the path of an executable that
behaves like ``nvidia-smi`` (it gets the same arguments), or pass ``nvidia_smi=`` / monkeypatch
:func:`find_nvidia_smi`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
import subprocess

log = logging.getLogger("inferencekey.agent.gpus")

QUERY_FIELDS = "index,uuid,name,memory.total,memory.used,utilization.gpu,driver_version"
QUERY_ARGS = [f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader,nounits"]
_CUDA_RE = re.compile(r"CUDA Version\s*:\s*([0-9]+(?:\.[0-9]+)*)", re.IGNORECASE)
_NUM_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def find_nvidia_smi() -> str | None:
    """Path of the nvidia-smi to run, or None on a host without one (CPU-only)."""
    fake = os.environ.get("IK_FAKE_NVIDIA_SMI")
    if fake:
        return fake
    return shutil.which("nvidia-smi")


def _to_int(value: str) -> int | None:
    """'81920' → 81920, '35 %' → 35, '[N/A]' / '[Not Supported]' / '' → None."""
    match = _NUM_RE.search(value or "")
    if not match or value.strip().startswith("["):
        return None
    return int(float(match.group(0)))


def parse_query_output(text: str, cuda_version: str | None = None) -> list[dict]:
    """Parse ``--query-gpu=... --format=csv,noheader,nounits`` output into protocol dicts.

    Tolerates blank lines, stray spaces, a header line, units and ``[N/A]`` values; lines that
    cannot be understood are skipped with a warning.
    """
    gpus: list[dict] = []
    for row in csv.reader(io.StringIO(text)):
        fields = [f.strip() for f in row]
        if not fields or not any(fields):
            continue
        if fields[0].lower() == "index":  # a header line (format without noheader)
            continue
        if len(fields) < 7:
            log.warning("ignoring unparseable nvidia-smi line: %r", ",".join(row))
            continue
        index = _to_int(fields[0])
        if index is None:
            log.warning("ignoring nvidia-smi line without a GPU index: %r", ",".join(row))
            continue
        gpus.append(
            {
                "index": index,
                "uuid": fields[1],
                # a name containing a comma would have been split: glue the middle back together
                "name": ", ".join(fields[2 : len(fields) - 4]).strip(),
                "memory_total_mb": _to_int(fields[-4]),
                "memory_used_mb": _to_int(fields[-3]),
                "utilization_pct": _to_int(fields[-2]),
                "driver_version": fields[-1],
                "cuda_version": cuda_version,
            }
        )
    gpus.sort(key=lambda g: g["index"])
    return gpus


def parse_cuda_version(banner: str) -> str | None:
    """'... CUDA Version: 13.0 ...' from the plain ``nvidia-smi`` banner → '13.0'."""
    match = _CUDA_RE.search(banner or "")
    return match.group(1) if match else None


class GpuDetector:
    """Runs nvidia-smi; caches the CUDA version (banner) and the last good inventory.

    If nvidia-smi fails or hangs after a successful detection, the last known list is returned
    (GPUs do not vanish because a query timed out) and a warning is logged.
    """

    def __init__(self, nvidia_smi: str | None = None, timeout: float = 15.0):
        self._explicit = nvidia_smi
        self.timeout = timeout
        self._cuda_version: str | None = None
        self._cuda_checked = False
        self._last: list[dict] | None = None

    def _run(self, exe: str, args: list[str]) -> str:
        proc = subprocess.run(
            [exe, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"exit code {proc.returncode}: {proc.stderr.strip()[:200]}")
        return proc.stdout

    def detect(self) -> list[dict]:
        exe = self._explicit or find_nvidia_smi()
        if not exe:
            return []
        try:
            if not self._cuda_checked:
                try:
                    self._cuda_version = parse_cuda_version(self._run(exe, []))
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    log.warning("nvidia-smi banner failed (%s); CUDA version unknown", exc)
                self._cuda_checked = True
            gpus = parse_query_output(self._run(exe, QUERY_ARGS), self._cuda_version)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("nvidia-smi failed: %s", exc)
            return [dict(g) for g in self._last] if self._last is not None else []
        self._last = gpus
        return [dict(g) for g in gpus]


def detect_gpus() -> list[dict]:
    """One-shot detection (no caching); ``[]`` on a host without nvidia-smi."""
    return GpuDetector().detect()


def parse_simulated_gpu(text: str) -> dict:
    """``"NVIDIA L4:24576"`` → one protocol GPU dict. The ``local`` capacity provider starts agents
    so: each reports one GPU of the catalog's name and memory on a machine that has none, and its
    engines run as ordinary processes. Raises ValueError naming the problem."""
    name, sep, vram = (text or "").rpartition(":")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME:VRAM_MB, got {text!r}")
    try:
        memory = int(vram)
    except ValueError:
        raise ValueError(f"VRAM_MB must be an integer, got {vram!r}") from None
    if memory <= 0:
        raise ValueError(f"VRAM_MB must be > 0, got {memory}")
    return {
        "index": 0, "uuid": "GPU-simulated-0", "name": name.strip(), "memory_total_mb": memory,
        "memory_used_mb": 0, "utilization_pct": 0, "driver_version": "simulated", "cuda_version": None,
    }
