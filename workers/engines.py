"""Launch recipes: one per backend, turning a workload spec + port + GPUs into what the agent runs.

A recipe returns the `launch` dict stored on the replica and sent to the agent verbatim:
`{backend, argv, env, health_path, api_base, warmup, vllm_version}`. `argv[0]` is resolved on the
worker's PATH by the agent (and swapped for a pinned vLLM installation when `vllm_version` is set).

What runs is the backend's own program (`workers/agent/programs.py`, the table the agent enforces
too); a user's `command` supplies only its arguments and `KEY=VALUE` variables, never a shell.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass

from .agent import programs

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class RecipeError(ValueError):
    pass


@dataclass(frozen=True)
class EngineInput:
    backend: str
    model_name: str
    task_type: str = "text2text"
    command: str | None = None
    vllm_version: str | None = None


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """`KEY=VALUE` prefixes and `export KEY=VALUE` lines become env; the rest is argv.

    Line continuations (`\\` + newline) are joined first, as a shell would."""
    text = command.replace("\\\n", " ")
    env: dict[str, str] = {}
    argv: list[str] = []
    for line in (ln.strip() for ln in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        _refuse_shell_syntax(line)
        tokens = shlex.split(line)
        if tokens and tokens[0] == "export":
            tokens = tokens[1:]
            for token in tokens:
                if _ENV_ASSIGNMENT.match(token):
                    key, value = token.split("=", 1)
                    env[key] = value
            continue
        while tokens and _ENV_ASSIGNMENT.match(tokens[0]):
            key, value = tokens.pop(0).split("=", 1)
            env[key] = value
        if tokens:
            if argv:
                raise RecipeError("the command has more than one program line; give one launch command")
            argv = tokens
    if not argv:
        raise RecipeError("the command has no program to run")
    return env, argv


def _refuse_shell_syntax(line: str) -> None:
    """The command is run without a shell: `;`, `&&`, `|`, redirections and `$(…)` would not do
    what they say, so they are refused rather than passed on as arguments."""
    lexer = shlex.shlex(line, posix=False, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        operators = [t for t in lexer if t and all(c in lexer.punctuation_chars for c in t)]
    except ValueError:
        return  # unbalanced quotes: shlex.split reports it with its own message
    if operators:
        raise RecipeError(
            f"shell syntax ({operators[0]!r}) is not supported: the command is one program and its arguments, "
            "run without a shell"
        )


def check_command(backend: str, command: str, *, vllm_version: str | None = None) -> str | None:
    """Why `command` cannot be this backend's launch command, or None. The one rule the validator
    (`workloads/spec.py`, so the API, the form and the reconciler) and `render()` apply."""
    try:
        env, argv = split_command(command)
    except RecipeError as exc:
        return str(exc)
    except ValueError as exc:
        return f"cannot be parsed as a command line: {exc}"
    prefix = programs.matching_prefix(backend, argv)
    if prefix is None:
        return (f"the {backend} backend runs {programs.expected(backend)}; the command supplies its arguments "
                f"(got {argv[0]!r})")
    if vllm_version and prefix != ("vllm",):
        return "a pinned vllm_version needs the command to start with `vllm`"
    for key in env:
        refusal = programs.env_refusal(key)
        if refusal:
            return refusal
    return None


def strip_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Remove `--flag value` and `--flag=value` for each flag (we inject our own host and port)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in flags:
            skip = "=" not in token
            continue
        out.append(token)
    return out


def _command_recipe(spec: EngineInput, host: str, port: int, health_path: str) -> dict:
    if not spec.command:
        raise RecipeError(f"the {spec.backend} backend needs config.command")
    problem = check_command(spec.backend, spec.command, vllm_version=spec.vllm_version)
    if problem:
        raise RecipeError(f"config.command: {problem}")
    env, argv = split_command(spec.command)
    argv = strip_flags(argv, ("--host", "--port")) + ["--host", host, "--port", str(port)]
    return {"argv": argv, "env": env, "health_path": health_path, "api_base": "/v1", "warmup": []}


def _vllm(spec: EngineInput, host: str, port: int) -> dict:
    launch = _command_recipe(spec, host, port, "/health")
    launch["vllm_version"] = spec.vllm_version
    return launch


def _llamacpp(spec: EngineInput, host: str, port: int) -> dict:
    return _command_recipe(spec, host, port, "/health")


def _sglang(spec: EngineInput, host: str, port: int) -> dict:
    argv = ["python3", "-m", "sglang.launch_server", "--model-path", spec.model_name, "--host", host, "--port", str(port)]
    if spec.task_type == "embedding":
        argv.append("--is-embedding")
    return {"argv": argv, "env": {}, "health_path": "/health", "api_base": "/v1", "warmup": []}


def _ollama(spec: EngineInput, host: str, port: int) -> dict:
    # Ollama serves every pulled model; the replica is ready only once the model is pulled.
    return {
        "argv": ["ollama", "serve"],
        "env": {"OLLAMA_HOST": f"{host}:{port}", "OLLAMA_KEEP_ALIVE": "-1"},
        "health_path": "/api/version",
        "api_base": "/v1",
        "warmup": [{"method": "POST", "path": "/api/pull", "json": {"model": spec.model_name, "stream": False}}],
    }


RECIPES = {"vllm": _vllm, "vllm-omni": _vllm, "llamacpp": _llamacpp, "sglang": _sglang, "ollama": _ollama}


def render(spec: EngineInput, *, host: str, port: int, gpu_indices: list[int]) -> dict:
    recipe = RECIPES.get(spec.backend)
    if recipe is None:
        raise RecipeError(f"no launch recipe for backend {spec.backend!r}")
    launch = {"backend": spec.backend, "vllm_version": None, **recipe(spec, host, port)}
    launch["gpu_indices"] = list(gpu_indices)
    return launch


def launch_hash(launch: dict, port: int) -> str:
    payload = json.dumps({"launch": launch, "port": port}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- VRAM estimate for placement --------------------------------------------------------

# Models whose names carry no parameter count (billions of parameters).
KNOWN_MODELS = {
    "gpt2": 0.124, "gpt2-medium": 0.355, "gpt2-large": 0.774, "gpt2-xl": 1.5,
    "bge-small-en-v1.5": 0.033, "bge-base-en-v1.5": 0.109, "bge-large-en-v1.5": 0.335, "bge-m3": 0.568,
    "bge-reranker-base": 0.278, "bge-reranker-large": 0.56, "bge-reranker-v2-m3": 0.568,
    "all-minilm-l6-v2": 0.023, "e5-large-v2": 0.335, "nomic-embed-text": 0.137,
    "whisper-large-v3": 1.55, "whisper-large-v3-turbo": 0.81, "mixtral-8x7b": 46.7,
    "phi-2": 2.7, "tinyllama": 1.1, "llama3": 8.0, "llama3.1": 8.0, "llama3.2": 3.0, "mistral": 7.2,
}
_PARAMS = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
DEFAULT_PARAMS_B = 8.0
GIB = 1024**3


def parameters_b(model_name: str) -> float:
    """Billions of parameters from the name (`Llama-3.1-8B`, `Mixtral-8x7B`, `Qwen2-0.5B`) or the table."""
    base = model_name.rsplit("/", 1)[-1].lower()
    base = base.split(":", 1)[0] if ":" in base and not _PARAMS.search(base.split(":", 1)[1]) else base.replace(":", "-")
    for name, size in KNOWN_MODELS.items():
        if base == name or base.startswith(name + "-") and not _PARAMS.search(base):
            return size
    best = 0.0
    for experts, number, unit in _PARAMS.findall(base):
        value = float(number) * (int(experts) if experts else 1)
        value = value / 1000 if unit.lower() == "m" else value
        best = max(best, value)
    return best or KNOWN_MODELS.get(base, DEFAULT_PARAMS_B)


def bytes_per_parameter(model_name: str) -> float:
    name = model_name.lower()
    if re.search(r"awq|gptq|int4|4bit|4-bit|q4|nf4|bnb-4", name):
        return 0.5
    if re.search(r"int8|8bit|8-bit|fp8|q8", name):
        return 1.0
    return 2.0  # fp16 / bf16


def vram_estimate_mb(model_name: str) -> int:
    """parameters × bytes per parameter × 1.2 + 2 GiB (KV cache and runtime headroom)."""
    size = parameters_b(model_name) * 1e9 * bytes_per_parameter(model_name) * 1.2 + 2 * GIB
    return int(size / (1024 * 1024))
