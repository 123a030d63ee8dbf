"""Shared test helpers and fixtures: the repo root, the test data, the shared data folder (present in
dev and CI only), running Snakemake on a copy of the pipeline, and one prepared engine for the session.

Tests are arranged as the package is: tests/unit/<package>/ (no servers, no pipeline runs),
tests/integration/ (real local processes: stand-in HTTP servers, the reference server, Snakemake on a
copy of the pipeline), tests/e2e/ (real engine servers, Slurm; marked slow)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = REPO / "tests" / "data"


# Node locks of this test session's own: a CPU bench job waits for any other on the node, and the
# tests must not wait for other sessions' measurements (or make them wait).
LOCK_DIR = Path(f"/tmp/infbench-test-locks-{os.getpid()}")


@pytest.fixture
def repo() -> Path:
    return REPO


def cell_number(cell: str) -> float:
    """The number of a main-table cell: without bold, its interval (`45.50 ±0.83`), a trailing
    "(external endpoint)" and its footnote marks (* client lag, ! busy, ≠ server count, † no interval,
    ‡ not cold)."""
    text = cell.replace("**", "").split(" (external endpoint)")[0].split(" ±")[0]
    return float(text.strip().strip("*!≠†‡"))


def pipeline_env(**extra: str) -> dict[str, str]:
    """The environment of a pipeline run: this checkout's package first, node locks of its own, no
    HF_TOKEN from the developer's shell."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"), INFBENCH_GPU_LOCK_DIR=str(LOCK_DIR))
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def run_snakemake(
    workdir: Path, *args: str, env: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 ARGS` in a copy of the pipeline, its output captured."""
    return subprocess.run(
        ["snakemake", "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env or pipeline_env(),
        timeout=timeout,
    )


def job_counts_of(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count} ({} when nothing is to be done)."""
    if "Job stats:" not in dry_run_output:
        return {}
    block = dry_run_output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.M)}


@pytest.fixture(scope="session")
def snakemake():
    """run_snakemake: `snakemake(workdir, *args, env=None, timeout=900)`."""
    return run_snakemake


@pytest.fixture(scope="session")
def job_counts():
    """job_counts_of: `job_counts(dry_run_stdout) -> {rule: count}`."""
    return job_counts_of


def write_built_files(workdir: Path, files: dict[str, str]) -> None:
    """Write stand-ins for what earlier steps built, oldest first in the given order, ten minutes
    back, so Snakemake sees them as up to date and reruns only what the test is about."""
    t0 = time.time() - 600
    for i, (name, text) in enumerate(files.items()):
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (t0 + i, t0 + i))


def copy_workflow(dest: Path) -> Path:
    """A fresh copy of the pipeline (no results, no venvs), so a test's run starts clean."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "envs"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, dest / name)
    return dest


def engine_spec_of(kind: str, **fields):
    """An EngineSpec of a kind for a test: the keys of the kind's own Settings (engines/kinds/) go
    into its settings, the others are the spec's (name, label and env default to the kind)."""
    from dataclasses import fields as dataclass_fields

    from infbench.engines.base import engine_for
    from infbench.engines.spec import EngineSpec

    settings_class = engine_for(kind).Settings
    own = {f.name for f in dataclass_fields(settings_class)}
    settings = settings_class(**{key: fields.pop(key) for key in list(fields) if key in own})
    fields.setdefault("name", kind)
    fields.setdefault("label", kind)
    fields.setdefault("env", kind)
    fields.setdefault("device", "cpu")
    return EngineSpec(kind=kind, settings=settings, **fields)


def gguf_meta(root: Path, name: str, **fields) -> None:
    """The GGUF record the gguf rule writes (llama.cpp's plan reads it), for a model under root."""
    meta = {
        "model": name,
        "status": "ok",
        "reason": None,
        "path": f"resources/gguf/{name}.gguf",
        "file_type": "F32",
        "source_dtype": "bfloat16",
        "tokenizer": "gpt2",
        "tokenizer_pre": "smollm",
        "sha256": "0" * 64,
        "size_bytes": 1,
        **fields,
    }
    (root / "results/models").mkdir(parents=True, exist_ok=True)
    (root / f"results/models/{name}.gguf.json").write_text(json.dumps(meta))


PREPARED_MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def prepared_transformers(tmp_path_factory) -> Path:
    """One transformers env and one converted SmolLM2 for every test of the session that needs a
    real engine (built once by the pipeline's own env and model rules)."""
    base = copy_workflow(tmp_path_factory.mktemp("prepared"))
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow"))
    result = subprocess.run(
        ["snakemake", "--cores", "2", ".venvs/transformers/.infbench-built", f"results/models/{PREPARED_MODEL}.json"],
        cwd=base,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base


def workdir_from_prepared(base: Path, dest: Path) -> Path:
    """A fresh copy of the pipeline that reuses the prepared env and model (linked, not rebuilt)."""
    workdir = copy_workflow(dest)
    for name in (".venvs", "resources"):
        (workdir / name).symlink_to(base / name, target_is_directory=True)
    for name in ("results/envs/transformers.lock", f"results/models/{PREPARED_MODEL}.json"):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / name, workdir / name)  # keeps the times: newer than their inputs, so done
    return workdir


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A real Hugging Face tokenizer, small: a byte-level BPE (GPT-2's pre-tokenizer, as SmolLM2 and
    Llama 3 have) trained on the bundled prompts, with a chat template, saved as a model folder."""
    pytest.importorskip("transformers", reason="tokenizer-exact prompts need transformers (the tools env)")

    from infbench.pipeline.prompts import BUILTIN_FILE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for line in BUILTIN_FILE.read_text().splitlines() for m in json.loads(line)["messages"]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|user|>", "<|system|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=1500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, additional_special_tokens=specials)
    fast.chat_template = TINY_CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    fast.save_pretrained(folder)
    return folder
