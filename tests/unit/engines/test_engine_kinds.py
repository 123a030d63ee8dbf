"""Engine kinds llamacpp, openai and sglang up to the process boundary, and their config checks:
a missing or misplaced key stops the run at start-up naming it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, engine_spec_of, gguf_meta
from infbench.engines.base import engine_for
from infbench.engines.kinds.openai import fill_command
from infbench.engines.kinds.vllm import cpu_list, vllm_cpu_best_env
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling, Scenario
from infbench.pipeline.config import ConfigError, engine_spec, validate_config

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _error(config) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    return str(info.value)


def _with_engine(**engine) -> dict:
    config = copy.deepcopy(DEFAULT)
    config["engines"] = {"x": engine}
    return config


def engine(kind, device="cpu", output_length="natural", **kw) -> EngineSpec:
    return engine_spec_of(
        kind,
        device=device,
        sampling=Sampling(max_tokens=32, output_length=output_length),
        scenarios=[
            Scenario(name="single", kind="single"),
            Scenario(name="throughput", kind="throughput", concurrency=6, requests=12),
        ],
        **kw,
    )


# --- config: every kind's keys checked at start-up ------------------------------------------------


def test_default_config_has_three_real_engines_and_tgi():
    config = validate_config(DEFAULT)
    assert [e["kind"] for e in config["engines"].values()] == ["transformers", "vllm", "llamacpp", "tgi"]
    assert engine_spec(config, "llamacpp").label == "llama.cpp"


@pytest.mark.parametrize(
    "kind,key,value",
    [
        ("vllm", "threads", 2),
        ("transformers", "command", ["x", "{port}"]),
        ("llamacpp", "launcher", "docker"),
        ("tgi", "base_url", "http://h:1"),
        ("vllm", "continuous_batching", True),
        ("openai", "parallel", 2),
    ],
)
def test_a_key_of_another_kind_is_named(kind, key, value):
    extra = {"command": ["srv", "{port}"]} if kind == "openai" else {"env": kind}
    message = _error(_with_engine(kind=kind, **extra, **{key: value}))
    assert f"engines.x.{key}" in message and f"this engine is kind {kind}" in message


def test_openai_needs_exactly_one_of_command_and_base_url():
    assert "engines.x: kind openai needs exactly one of command" in _error(_with_engine(kind="openai"))
    both = _with_engine(kind="openai", command=["s", "{port}"], base_url="http://127.0.0.1:1")
    assert "exactly one of command" in _error(both)


def test_openai_command_placeholders_are_checked():
    message = _error(_with_engine(kind="openai", command=["srv", "--port", "{port}", "--model", "{model}"]))
    assert "engines.x.command" in message and "unknown placeholder 'model'" in message
    assert "{model_path}" in message  # the known ones are listed
    assert "must contain {port}" in _error(_with_engine(kind="openai", command=["srv", "--port", "8000"]))


def test_env_is_required_except_for_openai():
    assert "engines.x.env: required for kind llamacpp" in _error(_with_engine(kind="llamacpp"))
    validate_config(_with_engine(kind="openai", command=["srv", "--port", "{port}"]))
    message = _error(_with_engine(kind="openai", env="transformers", base_url="http://127.0.0.1:9"))
    assert "engines.x.env" in message


def test_bad_values_of_the_new_keys_are_named():
    assert "engines.x.base_url" in _error(_with_engine(kind="openai", base_url="ftp://h"))
    assert "engines.x.api_key_env" in _error(_with_engine(kind="openai", base_url="http://h", api_key_env="my key"))
    assert "engines.x.threads" in _error(_with_engine(kind="llamacpp", env="llamacpp", threads=0))
    assert "engines.x.kind" in _error(_with_engine(kind="llama.cpp", env="llamacpp"))


# --- llama.cpp -------------------------------------------------------------------------------------


def test_llamacpp_sets_threads_slots_and_context_explicitly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gguf_meta(tmp_path, "m")
    model = ModelSpec(name="m", path="resources/models/m", dtype="float32", max_model_len=2048)
    plan = engine_for("llamacpp").plan(engine("llamacpp"), model, Path(".venvs/llamacpp"), "127.0.0.1", 9000, threads=2)
    cmd = plan.command
    assert cmd[0] == ".venvs/llamacpp/bin/python" and cmd[1].endswith("engines/llamacpp_server.py")
    from infbench.engines.kinds.llamacpp import LLAMACPP_LAUNCHER, _launcher_path

    assert cmd[1] == str(LLAMACPP_LAUNCHER)  # not under the working directory: its absolute path
    monkeypatch.chdir(REPO)  # the pipeline runs in the clone: its own launcher, named relative to it
    assert _launcher_path(LLAMACPP_LAUNCHER) == "workflow/infbench/engines/llamacpp_server.py"
    monkeypatch.chdir(tmp_path)
    assert cmd[cmd.index("--model") + 1] == "resources/gguf/m.gguf" and cmd[cmd.index("--alias") + 1] == "m"
    # threads from the job, one slot per request in flight, the model's context per slot
    assert [cmd[cmd.index(f) + 1] for f in ("--threads", "--parallel", "--ctx-size")] == ["2", "6", str(6 * 2048)]
    assert plan.settings["weights"] == "GGUF F32" and plan.settings["context"] == "12288 tokens (2048 per slot)"
    fields = engine_for("llamacpp").request_fields(engine("llamacpp"))
    assert fields["top_k"] == 0 and fields["min_p"] == 0.0
    assert "ignore_eos" not in plan.extra_body
    assert cmd[cmd.index("--cache-type") + 1] == "f32" and plan.settings["KV cache"] == "F32 (the serve dtype)"
    explicit = engine("llamacpp", threads=1, parallel=2, ctx_size=1024, output_length="fixed")
    plan = engine_for("llamacpp").plan(explicit, model, Path("v"), "127.0.0.1", 9000, threads=8)
    assert [plan.command[plan.command.index(f) + 1] for f in ("--threads", "--parallel", "--ctx-size")] == [
        "1",
        "2",
        "1024",
    ]
    assert plan.extra_body["ignore_eos"] is True and plan.fixed_length_control == "ignore_eos"


def test_llamacpp_says_why_when_no_gguf_could_be_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = ModelSpec(name="f", path="resources/models/f")
    assert "no GGUF for f" in engine_for("llamacpp").unavailable_reason(engine("llamacpp"), model)
    gguf_meta(tmp_path, "f", status="unsupported", reason="n/a: no GGUF writer for FalconForCausalLM", path=None)
    assert (
        engine_for("llamacpp").unavailable_reason(engine("llamacpp"), model)
        == "n/a: no GGUF writer for FalconForCausalLM"
    )


def test_the_launcher_imports_nothing_from_infbench():
    """It runs in the llamacpp venv, which has only xllamacpp."""
    source = (REPO / "workflow/infbench/engines/llamacpp_server.py").read_text()
    assert "import infbench" not in source and "from infbench" not in source


# --- openai ----------------------------------------------------------------------------------------


def test_openai_command_template_is_filled(tmp_path):
    spec = engine(
        "openai",
        env="",
        command=[
            "my-server",
            "{model_path}",
            "--name",
            "{served_model_name}",
            "--bind={host}:{port}",
            "--tp",
            "{tp}",
            "--gpus",
            "{gpus}",
        ],
        health_path="/ready",
        version_path="/v",
        args=["--fast"],
    )
    model = ModelSpec(name="m", path="resources/models/m", gpus=2)
    plan = engine_for("openai").plan(spec, model, tmp_path, "127.0.0.1", 8123, ["0", "3"])
    assert plan.command == [
        "my-server",
        "resources/models/m",
        "--name",
        "m",
        "--bind=127.0.0.1:8123",
        "--tp",
        "2",
        "--gpus",
        "0,3",
        "--fast",
    ]
    assert plan.health_path == "/ready" and plan.version_path == "/v" and not plan.external
    with pytest.raises(ValueError, match="unknown placeholder"):
        fill_command(["{nope}"], {})


def test_openai_command_runs_from_its_env(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srv").write_text("")
    plan = engine_for("openai").plan(
        engine("openai", env="e", command=["srv", "{port}"]), ModelSpec(name="m", path="p"), tmp_path, "127.0.0.1", 1
    )
    assert plan.command == [str(tmp_path / "bin" / "srv"), "1"]


def test_openai_base_url_is_external_and_keeps_only_the_key_name():
    spec = engine("openai", env="", base_url="https://api.example.com", api_key_env="MY_ENDPOINT_KEY")
    plan = engine_for("openai").plan(spec, ModelSpec(name="m", path="p"), Path("v"), "", 0)
    assert plan.external and plan.command == [] and plan.api_key_env == "MY_ENDPOINT_KEY"
    assert plan.settings["endpoint"] == "external endpoint" and "not controlled" in plan.settings["prefix cache"]


# --- sglang, vLLM's CPU setup, transformers' batching ----------------------------------------------


def test_sglang_command_line_and_cpu_skip_reason(tmp_path):
    model = ModelSpec(name="m", path="resources/models/m", dtype="bfloat16", gpus=2, max_model_len=4096)
    plan = engine_for("sglang").plan(
        engine("sglang", device="cuda", output_length="fixed"), model, tmp_path, "127.0.0.1", 30000
    )
    cmd = plan.command
    assert cmd[:3] == [str(tmp_path / "bin/python"), "-m", "sglang.launch_server"]
    assert [cmd[cmd.index(f) + 1] for f in ("--model-path", "--tp-size", "--dtype", "--context-length")] == [
        "resources/models/m",
        "2",
        "bfloat16",
        "4096",
    ]
    assert cmd[cmd.index("--sampling-defaults") + 1] == "openai"  # never the model's generation_config
    assert plan.extra_body == {"ignore_eos": True, "min_tokens": 32} and plan.version_path == "/server_info"
    assert (
        engine_for("sglang").unavailable_reason(engine("sglang", device="cpu")) == "n/a: SGLang runs on CUDA GPUs only"
    )
    assert engine_for("sglang").unavailable_reason(engine("sglang", device="cuda")) is None
    assert (REPO / "envs/sglang.txt").read_text().count("sglang==") == 1


def test_vllm_cpu_binds_the_jobs_cores_and_preloads_what_the_env_has(tmp_path):
    assert cpu_list([0, 1, 2, 3]) == "0-3" and cpu_list([2]) == "2" and cpu_list([0, 2, 5]) == "0,2,5"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/libiomp5.so").write_text("")
    env = vllm_cpu_best_env(tmp_path, [0, 1])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0"  # CPU 1 kept for the front end
    assert vllm_cpu_best_env(tmp_path, [4, 5, 6, 7])["VLLM_CPU_OMP_THREADS_BIND"] == "4-6"
    assert vllm_cpu_best_env(tmp_path, [3])["VLLM_CPU_OMP_THREADS_BIND"] == "3"
    assert env["LD_PRELOAD"].split(":")[-1] == str((tmp_path / "lib/libiomp5.so").resolve())
    plan = engine_for("vllm").plan(
        engine("vllm", args=["--enforce-eager"], server_env={"VLLM_CPU_KVCACHE_SPACE": "1"}),
        ModelSpec(name="m", path="p"),
        tmp_path,
        "127.0.0.1",
        1,
        threads=1,
    )
    assert plan.env["VLLM_CPU_OMP_THREADS_BIND"] == str(min(__import__("os").sched_getaffinity(0)))
    assert plan.settings["KV cache"] == "1 GiB (VLLM_CPU_KVCACHE_SPACE)" and plan.settings["graphs"].startswith("eager")
    assert (
        engine_for("vllm").plan(engine("vllm", device="cuda"), ModelSpec(name="m", path="p"), tmp_path, "h", 1).env
        == {}
    )


def test_transformers_continuous_batching_is_a_setting(tmp_path):
    model = ModelSpec(name="m", path=str(tmp_path))
    off = engine_for("transformers").plan(engine("transformers"), model, tmp_path, "127.0.0.1", 1)
    on = engine_for("transformers").plan(
        engine("transformers", continuous_batching=True), model, tmp_path, "127.0.0.1", 1
    )
    assert "--continuous-batching" not in off.command and off.settings["continuous batching"].startswith("off")
    assert "--continuous-batching" in on.command and on.settings["continuous batching"].startswith("on")
