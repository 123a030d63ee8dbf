"""Subcommands `estimate`, `memory-estimate`, `memory-bandwidth` and `memory-table`.

The main infbench CLI (infbench.cli) registers them with add_parser(subparsers, cpu_runtimes) and
hands in the engine kinds' CPU memory figures, which this layer cannot import; run them as
`infbench estimate ...` or, in the tools venv, `python -m infbench.cli memory-estimate ...`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from infbench.fileio import write_text_atomic
from infbench.memory.errors import EstimateError
from infbench.memory.vllm import PINNED_VERSION, SAMPLERS


def add_parser(subparsers: argparse._SubParsersAction, cpu_runtimes: Callable[[], dict] | None = None) -> None:
    """Register the memory subcommands on an argparse subparsers object. cpu_runtimes: a function
    giving each engine kind's CPU memory figures (engines.base.cpu_runtimes) for the estimates."""
    p = subparsers.add_parser(
        "estimate",
        help="estimate model memory and GPU fit (no weights downloaded)",
        description="Estimate weights, KV cache and overheads of MODEL, and which GPUs "
        "fit it under vLLM. MODEL is a hub id, a local model directory or a "
        "config.json file.",
    )
    p.add_argument("model", metavar="MODEL")
    _add_shape_args(p)
    p.add_argument("--gpu", metavar="NAME", help="fit on this GPU only (e.g. H100, A100-40, L4)")
    p.add_argument(
        "--gpu-mem",
        metavar="GiB",
        type=float,
        help="GPU memory as CUDA reports it (vLLM's total_gpu_memory); with --gpu it "
        "overrides that GPU's capacity and keeps its identity (vLLM's defaults "
        "depend on the device name)",
    )
    p.add_argument(
        "--bandwidth",
        metavar="GB/s",
        type=float,
        help="GPU memory bandwidth for the decode bound (default: the catalogue's)",
    )
    p.add_argument("--tp", type=int, metavar="N", help="tensor-parallel size (default: the smallest that fits)")
    p.add_argument(
        "--cpu-bandwidth",
        metavar="GB/s",
        type=float,
        help="local CPU memory bandwidth for its decode bound (default: measured now with a short read benchmark)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run_estimate, cpu_runtimes=cpu_runtimes)

    p = subparsers.add_parser("memory-estimate", help="write one model's memory estimate as JSON (pipeline rule)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", metavar="DIR", help="HF model directory (config.json, *.safetensors)")
    src.add_argument("--config", metavar="FILE", help="architecture file (config.json facts)")
    src.add_argument(
        "--model-meta",
        metavar="FILE",
        help="results/models/NAME.json of the models rule: its 'path' is the "
        "model directory and its 'dtype' the default --dtype",
    )
    p.add_argument("--name", required=True, help="model name used in tables")
    _add_shape_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="results/memory/NAME.json")
    p.set_defaults(func=run_memory_estimate, cpu_runtimes=cpu_runtimes)

    p = subparsers.add_parser(
        "memory-bandwidth",
        help="measure this machine's memory bandwidth (read benchmark) as JSON",
        description="A short read benchmark, one thread per core: the bandwidth the "
        "single-request decode bound of CPU runs is computed from.",
    )
    p.add_argument("--buffer-mib", type=int, default=128, help="MiB read per thread (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed reads; the best counts (default %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE", help="results/hardware/bandwidth.json")
    p.set_defaults(func=run_memory_bandwidth)

    p = subparsers.add_parser("memory-table", help="write results/tables/memory.md from estimates and measurements")
    p.add_argument("--estimates", nargs="+", required=True, metavar="FILE")
    p.add_argument("--measured", nargs="*", default=[], metavar="FILE")
    p.add_argument(
        "--gpu-util",
        type=float,
        help="gpu_memory_utilization the engines ran with (default: each estimate's, i.e. its vLLM version's default)",
    )
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=run_memory_table)


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        metavar="D",
        help="weight dtype: torch name (float16, bfloat16, ...) or short form "
        "(fp32, bf16, fp16, fp8, int8, int4/gptq, awq, nf4, q8_0, q4_k); "
        "default: the config's",
    )
    p.add_argument("--kv-dtype", metavar="D", help="KV-cache dtype (default: the activation dtype)")
    p.add_argument("--context", type=int, metavar="N", help="sequence length L (default: the config's maximum)")
    p.add_argument(
        "--batch", type=int, default=1, metavar="B", help="concurrent sequences of length L that must fit (default 1)"
    )
    p.add_argument(
        "--gpu-util",
        type=float,
        metavar="U",
        help="vLLM gpu_memory_utilization (default: the vLLM version's, 0.92 since 0.32)",
    )
    p.add_argument(
        "--vllm-version",
        default=PINNED_VERSION,
        metavar="V",
        help="vLLM version whose start-up accounting to follow (default: the pinned "
        "%(default)s; 0.6.5-0.7.x use the v0 engine's)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="sampler vLLM profiles: PyTorch top-k/top-p (native, the larger peak) or "
        "FlashInfer's (logged as 'Using FlashInfer for top-p & top-k sampling'); "
        "default: the version's (FlashInfer since 0.32)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        metavar="G",
        help="GPTQ/AWQ group size (default: the config's quantization_config, else 128; -1 = one group per column)",
    )


def _guarded(name: str, func, args: argparse.Namespace) -> int:
    # Bad input is reported in one line naming the culprit, not a traceback.
    try:
        return func(args)
    except EstimateError as exc:
        print(f"infbench {name}: error: {exc}", file=sys.stderr)
        return 2


def run_estimate(args: argparse.Namespace) -> int:
    return _guarded("estimate", _estimate, args)


def _estimate(args: argparse.Namespace) -> int:
    from infbench.memory.estimate import build_estimate
    from infbench.memory.facts import model_facts
    from infbench.memory.gpus import custom_gpu, find_gpu
    from infbench.memory.render import render_text

    gpus = None
    like = find_gpu(args.gpu) if args.gpu else None
    if args.gpu_mem is not None or args.bandwidth is not None:
        gib = args.gpu_mem if args.gpu_mem is not None else (like.memory_bytes / 2**30 if like else None)
        if gib is None:
            raise EstimateError("--bandwidth needs --gpu or --gpu-mem")
        gpus = [custom_gpu(gib, like, args.bandwidth)]
    elif like is not None:
        gpus = [like]
    facts = model_facts(args.model)  # a bad MODEL fails here, before any measuring
    est = build_estimate(
        facts,
        dtype=args.dtype,
        kv_dtype=args.kv_dtype,
        context=args.context,
        batch=args.batch,
        gpus=gpus,
        tp=args.tp,
        gpu_util=args.gpu_util,
        vllm_version=args.vllm_version,
        sampler=args.sampler,
        group_size=args.group_size,
        cpu_bandwidth=_cpu_bandwidth(args.cpu_bandwidth),
        cpu_runtimes=_cpu_runtimes(args),
    )
    print(est.to_json_text() if args.json else render_text(est))
    return 0


def _cpu_bandwidth(gb_s: float | None) -> tuple[float, str]:
    """The local CPU's bandwidth: given, or measured now (a second or two of copying)."""
    if gb_s is not None:
        if gb_s <= 0:
            raise EstimateError(f"--cpu-bandwidth must be positive, got {gb_s}")
        return gb_s * 1e9, "--cpu-bandwidth"
    from infbench.memory.bandwidth import measure_read_bandwidth

    m = measure_read_bandwidth(buffer_mib=64, repeats=3)
    load = f", load {m.load_1min:.2f}" if m.load_1min is not None else ""
    return m.bandwidth_bytes_s, f"read benchmark now, {m.threads} threads{load}"


def _cpu_runtimes(args: argparse.Namespace) -> dict | None:
    return args.cpu_runtimes() if getattr(args, "cpu_runtimes", None) else None


def run_memory_estimate(args: argparse.Namespace) -> int:
    return _guarded("memory-estimate", _memory_estimate, args)


def _memory_estimate(args: argparse.Namespace) -> int:
    from infbench.memory.estimate import estimate
    from infbench.memory.table import load_json

    model, dtype, stored_dtype = args.model_dir or args.config, args.dtype, None
    if args.model_meta:
        meta = load_json(Path(args.model_meta), "model metadata")
        if "path" not in meta:
            raise EstimateError(f"model metadata {args.model_meta} has no 'path'")
        model, dtype = str(meta["path"]), dtype or meta.get("dtype")
        stored_dtype = meta.get("dtype")  # as prepared on disk; engines may cast it at load
    est = estimate(
        model,
        name=args.name,
        dtype=dtype,
        kv_dtype=args.kv_dtype,
        context=args.context,
        batch=args.batch,
        gpu_util=args.gpu_util,
        stored_dtype=stored_dtype,
        vllm_version=args.vllm_version,
        sampler=args.sampler,
        group_size=args.group_size,
        cpu_runtimes=_cpu_runtimes(args),
    )
    out = Path(args.out)
    write_text_atomic(out, est.to_json_text() + "\n")  # never a half-written estimate
    print(
        f"wrote {out}: {est.facts.params.total:,} parameters, "
        f"smallest vLLM setup {est.smallest.setup if est.smallest else 'none'}"
    )
    return 0


def run_memory_bandwidth(args: argparse.Namespace) -> int:
    from infbench.memory.bandwidth import measure_read_bandwidth, write_measurement

    if args.buffer_mib <= 0 or args.repeats <= 0:
        print("infbench memory-bandwidth: error: --buffer-mib and --repeats must be positive", file=sys.stderr)
        return 2
    m = measure_read_bandwidth(args.buffer_mib, args.repeats)
    write_measurement(args.out, m)
    load = f", 1-min load {m.load_1min:.2f}" if m.load_1min is not None else ""
    print(f"wrote {args.out}: {m.bandwidth_bytes_s / 1e9:.1f} GB/s ({m.threads} threads{load})")
    return 0


def run_memory_table(args: argparse.Namespace) -> int:
    return _guarded("memory-table", _memory_table, args)


def _memory_table(args: argparse.Namespace) -> int:
    from infbench.memory.table import write_table

    out = Path(args.out)
    write_table([Path(p) for p in args.estimates], [Path(p) for p in args.measured], out, args.gpu_util)
    print(f"wrote {out}")
    return 0
