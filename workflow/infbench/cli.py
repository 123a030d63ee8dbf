"""The `infbench` command: the steps the Snakemake rules run, and tools for users."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from infbench.memory.cli import add_parser as add_memory_commands


def _cmd_prompts(args) -> int:
    from infbench.prompts import PromptSourceError, build_sample

    try:
        meta = build_sample(args.source, args.n, args.seed, args.out)
    except PromptSourceError as err:
        print(f"error: prompts: {err}", file=sys.stderr)
        return 2
    print(f"{meta['count']} prompts from {meta['source']} (seed {meta['seed']}), sha256 {meta['sha256']}", file=sys.stderr)
    return 0


def _cmd_build_env(args) -> int:
    from infbench.envbuild import build_env

    build_env(args.name, args.requirements, args.venv, args.lock, args.marker, args.log)
    return 0


def _cmd_bench(args) -> int:
    from infbench.bench import BenchPaths, run_bench
    from infbench.server import ServerError

    _log_to(args.log)
    paths = BenchPaths(
        engine_spec=args.engine_spec, model_spec=args.model_spec, prompts=args.prompts, venv=args.venv,
        lock=args.lock, out_dir=args.out_dir, server_log=args.server_log,
    )
    try:
        run_bench(paths)
    except ServerError as err:
        logging.getLogger("infbench.bench").error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_merge(args) -> int:
    from infbench.tables import MergePlan, merge

    merge(args.raw_dir, args.out_dir, MergePlan.from_json(args.plan))
    print(f"tables written to {args.out_dir}", file=sys.stderr)
    return 0


def _log_to(path: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prompts", help="sample N chat prompts with a seed from a source")
    p.add_argument("--source", required=True, help="builtin | jsonl:PATH | hf:DATASET[:SPLIT]")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_prompts)

    p = sub.add_parser("build-env", help="build a venv from envs/NAME.txt and write its lock")
    p.add_argument("--name", required=True)
    p.add_argument("--requirements", type=Path, required=True)
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--marker", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    p.set_defaults(func=_cmd_build_env)

    p = sub.add_parser("bench", help="run one (engine, model) bench job")
    p.add_argument("--engine-spec", type=Path, required=True)
    p.add_argument("--model-spec", type=Path, required=True)
    p.add_argument("--prompts", type=Path, required=True)
    p.add_argument("--venv", type=Path, required=True)
    p.add_argument("--lock", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--server-log", type=Path, required=True)
    p.add_argument("--log", type=Path)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("merge", help="merge raw records into markdown tables and a CSV")
    p.add_argument("--raw-dir", type=Path, default=Path("results/raw"))
    p.add_argument("--out-dir", type=Path, default=Path("results/tables"))
    p.add_argument("--plan", required=True, help="JSON: {engines: {name: label}, models: {...}, scenarios: {name: kind}}")
    p.set_defaults(func=_cmd_merge)

    add_memory_commands(sub)  # estimate, memory-estimate, memory-table
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
