"""Shared test helpers: the repo root and the shared data folder (present in dev and CI only)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def repo() -> Path:
    return REPO


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


PREPARED_MODEL = "smollm2-135m"


@pytest.fixture(scope="session")
def prepared_transformers(tmp_path_factory) -> Path:
    """One transformers env and one converted SmolLM2 for every test of the session that needs a
    real engine (built once by the pipeline's own env and model rules)."""
    import os
    import subprocess

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
