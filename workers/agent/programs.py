"""What an engine may be: the programs each backend runs, and the variables a workload may not set.

The one table of the rule, kept here (standard library only) so that the agent, which runs on GPU
hosts without Django, refuses the same things the control plane's validator refuses
(`workers/engines.py` owns the recipes and the user-facing messages; it reads this table).

A backend's launch `argv` must start with one of its prefixes: the executable, found by name on
the agent's PATH (never a path), and for a Python module the interpreter, `-m` and the module.
Whatever follows the prefix are arguments, passed without a shell.
"""

from __future__ import annotations

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
