"""What a workload may run: the backend's own program, its arguments, no shell, no loader variables."""
from __future__ import annotations

import pytest

from workers import engines
from workers.agent import programs
from workloads.spec import SpecError, validate

from .specs import vllm_spec


@pytest.mark.parametrize("backend,command", [
    ("vllm", "vllm serve m --max-model-len 512"),
    ("vllm", "HF_TOKEN=hf_abc VLLM_LOGGING_LEVEL=DEBUG vllm serve m"),
    ("vllm", "export HF_TOKEN=hf_abc\nvllm serve m \\\n  --dtype half"),
    ("vllm", "python -m vllm.entrypoints.openai.api_server --model m"),
    ("vllm-omni", "vllm serve m --omni"),
    ("llamacpp", "llama-server -m /models/x.gguf -c 4096"),
    ("vllm", "vllm serve m --chat-template '{% if x %};{% endif %}'"),
])
def test_backend_programs_with_arguments_are_accepted(backend, command):
    assert engines.check_command(backend, command) is None


def test_other_program_is_refused_naming_the_expected_executable():
    with pytest.raises(SpecError) as exc:
        validate(vllm_spec(config={"command": "sh -c 'env'"}))
    message = exc.value.errors["config.command"][0]
    assert "`vllm`" in message and "'sh'" in message


def test_llamacpp_names_llama_server():
    assert "`llama-server`" in engines.check_command("llamacpp", "python3 -c 'print(1)'")


def test_sglang_verbatim_launch_module_is_allowed_by_the_table():
    # The check takes any backend of the table, so a verbatim sglang command can be accepted later.
    assert engines.check_command("sglang", "python3 -m sglang.launch_server --model-path m") is None
    assert engines.check_command("sglang", "python3 -m sglang.other") is not None


def test_recipes_only_render_allowed_programs():
    for backend in engines.RECIPES:
        spec = engines.EngineInput(backend=backend, model_name="m", command="vllm serve m" if backend.startswith("vllm")
                                   else "llama-server -m m" if backend == "llamacpp" else None)
        launch = engines.render(spec, host="127.0.0.1", port=9000, gpu_indices=[])
        assert programs.matching_prefix(backend, launch["argv"]) is not None


def test_render_refuses_a_stored_command_outside_the_allow_list():
    # A row written before the rule existed never reaches a worker.
    spec = engines.EngineInput(backend="vllm", model_name="m", command="python3 -c 'import os'")
    with pytest.raises(engines.RecipeError, match="config.command"):
        engines.render(spec, host="127.0.0.1", port=9000, gpu_indices=[])


@pytest.mark.parametrize("key", ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PATH", "HOME",
                                 "PYTHONHOME", "BASH_ENV", "CUDA_VISIBLE_DEVICES", "IK_JOIN_TOKEN", "GCONV_PATH"])
def test_loader_variables_are_refused(key):
    assert key in (engines.check_command("vllm", f"{key}=/tmp/x vllm serve m") or "")
