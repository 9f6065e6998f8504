"""What an engine may be: the programs each backend runs, and the variables a workload may not set.

The one table of the rule, kept here (standard library only) so that the agent, which runs on GPU
hosts without Django, refuses the same things the control plane's validator refuses
(`workers/engines.py` owns the recipes and the user-facing messages; it reads this table).

A backend's launch `argv` must start with one of its prefixes: the executable, found by name on
the agent's PATH (never a path), and for a Python module the interpreter, `-m` and the module.
Whatever follows the prefix are arguments, passed without a shell.
"""

from __future__ import annotations

import os
import re

_VLLM = (
    ("vllm",),
    ("python", "-m", "vllm.entrypoints.openai.api_server"),
    ("python3", "-m", "vllm.entrypoints.openai.api_server"),
)

PROGRAMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "vllm": _VLLM,
    "vllm-omni": _VLLM,
    "llamacpp": (("llama-server",),),
    "sglang": (("python", "-m", "sglang.launch_server"), ("python3", "-m", "sglang.launch_server")),
    "ollama": (("ollama",),),
}

# Variables a workload's command may not set: they change which code is loaded or how the program
# is found, or they belong to the agent. A deny-list (not an allow-list) because engines read many
# legitimate variables of their own (HF_*, VLLM_*, NCCL_*, OMP_NUM_THREADS, OLLAMA_*, …).
REFUSED_ENV = frozenset({
    "PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "IFS", "CDPATH", "CUDA_VISIBLE_DEVICES",
    "LOCPATH", "NLSPATH", "TZDIR", "HOSTALIASES", "RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN",
})
REFUSED_ENV_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "GCONV_", "MALLOC_", "GLIBC_", "OPENSSL_", "SSL_ENGINE", "NODE_", "PERL", "RUBY",
    "JAVA_", "_JAVA_", "JDK_", "LUA_", "GIT_", "BASH_FUNC_", "IK_", "INFERENCEKEY_",
)


def expected(backend: str) -> str:
    """Human form of what a backend runs: "`vllm` or `python -m vllm.entrypoints.openai.api_server`…"."""
    return " or ".join(f"`{' '.join(prefix)}`" for prefix in PROGRAMS.get(backend, ()))


def matching_prefix(backend: str, argv: list[str]) -> tuple[str, ...] | None:
    """The allowed prefix `argv` starts with, or None (unknown backend, other program, a path)."""
    for prefix in PROGRAMS.get(backend, ()):
        if tuple(argv[: len(prefix)]) == prefix:
            return prefix
    return None


def env_refusal(key: str) -> str | None:
    """Why a workload may not set `key`, or None when it may."""
    upper = key.upper()
    if upper in REFUSED_ENV or upper.startswith(REFUSED_ENV_PREFIXES):
        return f"{key} cannot be set by a workload (it changes what code the engine loads, or belongs to the agent)"
    return None


_PATH_PIECE_SPLIT = re.compile(r"[=,:;]")


def path_refusal(values: list[str], *, protected: list[str], cwd: str) -> str | None:
    """Why one of `values` (an engine's arguments and variables) names a protected place, or None.

    Engines have file-reading features of their own (vLLM's `--chat-template FILE`,
    `--allowed-local-media-path DIR` …): an argument may not name the agent's state, a directory
    the operator protects (under `up`, the control plane's data dir) or an ancestor of one, nor
    /proc. Paths are resolved as the engine would, from its working directory `cwd`, which itself
    may be used freely."""
    roots = [os.path.realpath(p) for p in protected]
    home = os.path.realpath(cwd)
    for value in values:
        for piece in {value, *_PATH_PIECE_SPLIT.split(value)}:
            if "/" not in piece and piece not in (".", ".."):
                continue
            path = os.path.realpath(os.path.join(home, piece))
            if path == home or path.startswith(home + os.sep):
                continue
            if path == "/proc" or path.startswith("/proc/"):
                return f"{piece!r} points into /proc"
            for root in roots:
                if path == root or path.startswith(root + os.sep) or root.startswith(path.rstrip(os.sep) + os.sep):
                    return f"{piece!r} names the agent's own files ({root}) or a directory above them"
    return None
