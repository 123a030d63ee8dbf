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

from infbench.handoff import HandoffError, ModelMeta
from infbench.memory.errors import EstimateError
from infbench.memory.flags import BANDWIDTH_FILE
from infbench.memory.vllm import PINNED_VERSION, SAMPLERS


def add_parser(subparsers: argparse._SubParsersAction, cpu_runtimes: Callable[[], dict] | None = None) -> None:
    """Register the memory subcommands on an argparse subparsers object. cpu_runtimes: a function
    giving each engine kind's CPU memory figures (engines.base.cpu_runtimes) for the estimates."""
    p = subparsers.add_parser(
        "estimate",
        help="can I run it? model memory and GPU fit under vLLM (no weights downloaded)",
        description="Estimate weights, KV cache and overheads of MODEL, and which GPUs fit it under vLLM: "
        "the answer first, then the table for every catalogue GPU, then the details. MODEL is a hub "
        "id, a local model directory or a config.json file. vLLM's own flag names work too. "
        "--web serves the same estimate as a page.",
    )
    _strict(p)
    p.add_argument("model", metavar="MODEL", nargs="?", help="hub id, model directory or config.json (not with --web)")
    _add_shape_args(p)
    p.add_argument(
        "--tensor-parallel-size",
        "-tp",
        "--tp",
        dest="tp",
        type=int,
        metavar="N",
        help="GPUs per model (default: the smallest that fits)",
    )
    p.add_argument(
        "--max-num-seqs", type=int, metavar="N", help="vLLM max_num_seqs (default: the server's, per GPU and version)"
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        metavar="N",
        help="vLLM max_num_batched_tokens: the profiling batch (default: the server's, per GPU and version)",
    )
    p.add_argument(
        "--enforce-eager", action="store_true", help="no CUDA graphs (vLLM --enforce-eager): their memory is not needed"
    )
    p.add_argument(
        "--disable-custom-all-reduce",
        action="store_true",
        help="NCCL only at TP>1 (vLLM's flag; also what happens across nodes)",
    )
    p.add_argument("--gpu", metavar="NAME", help="fit on this GPU only, by exact name (e.g. H100-80GB, A100-40GB, L4)")
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
    p.add_argument(
        "--cpu-bandwidth",
        metavar="GB/s",
        nargs="?",
        const="measure",
        help="add this CPU's decode bound: GB/s, or no value to measure it now with a short read benchmark "
        f"(default: the pipeline's {BANDWIDTH_FILE} when present, else none)",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--web", action="store_true", help="serve the estimator as a local page instead")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="--web: port (default %(default)s; 0 = any free port)")
    p.set_defaults(func=run_estimate, parser=p, cpu_runtimes=cpu_runtimes)

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
        "--quantization",
        dest="dtype",
        metavar="D",
        help="weight storage: torch name (float16, bfloat16, ...) or scheme (fp32, bf16, fp16, fp8, fp8-block, "
        "fp8-channel, int8, int4/gptq, gptq-int8, awq, w4a16, mxfp4, nvfp4, nf4, q8_0, q4_k); "
        "default: the config's quantization_config, else its torch_dtype",
    )
    p.add_argument(
        "--kv-cache-dtype",
        "--kv-dtype",
        dest="kv_dtype",
        metavar="D",
        help="KV-cache dtype (default: the activation dtype)",
    )
    p.add_argument(
        "--max-model-len",
        "--context",
        dest="context",
        type=int,
        metavar="N",
        help="sequence length (default: the config's maximum)",
    )
    p.add_argument(
        "--batch", type=int, default=1, metavar="B", help="concurrent sequences of length L that must fit (default 1)"
    )
    p.add_argument(
        "--gpu-memory-utilization",
        "--gpu-util",
        dest="gpu_util",
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
        help="GPTQ/AWQ/W4A16 group size (default: the config's quantization_config, else 128; "
        "-1 = one group per column)",
    )


def _strict(p: argparse.ArgumentParser) -> None:
    """Unknown options are this subcommand's usage error, not the top-level parser's (which would
    print infbench's usage and every subcommand)."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extra = parse(args, namespace)
        if extra:
            p.error("unrecognized arguments: " + " ".join(extra))
        return ns, extra

    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _guarded(name: str, func, args: argparse.Namespace) -> int:
    # Bad input is reported in one line naming the culprit, not a traceback.
    try:
        return func(args)
    except EstimateError as exc:
        print(f"infbench {name}: error: {exc}", file=sys.stderr)
        return 2


def run_estimate(args: argparse.Namespace) -> int:
    if args.web:
        if args.model:
            args.parser.error("--web takes no MODEL: pick or upload one on the page")
        from infbench.memory.web import serve

        return serve(args.host, args.port, _cpu_runtimes(args))
    if not args.model:
        args.parser.error("MODEL is required (or --web)")
    return _guarded("estimate", _estimate, args)


def _estimate(args: argparse.Namespace) -> int:
    from infbench.memory.flags import estimate_from_args
    from infbench.memory.render import render_text

    est = estimate_from_args(args)
    print(est.to_json_text() if args.json else render_text(est))
    return 0


def _cpu_runtimes(args: argparse.Namespace) -> dict | None:
    return args.cpu_runtimes() if getattr(args, "cpu_runtimes", None) else None


def run_memory_estimate(args: argparse.Namespace) -> int:
    return _guarded("memory-estimate", _memory_estimate, args)


def _memory_estimate(args: argparse.Namespace) -> int:
    from infbench.memory.estimate import estimate

    model, dtype, stored_dtype = args.model_dir or args.config, args.dtype, None
    if args.model_meta:
        try:
            meta = ModelMeta.read(args.model_meta)
        except (OSError, HandoffError) as err:
            raise EstimateError(f"model metadata: {err}") from None
        model, dtype = meta.path, dtype or meta.dtype or None
        stored_dtype = meta.dtype or None  # as prepared on disk; engines may cast it at load
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
    est.to_record().write(out)  # atomic: never a half-written estimate
    print(
        f"wrote {out}: {est.facts.params.total:,} parameters, "
        f"smallest vLLM setup {est.smallest.setup if est.smallest else 'none'}"
    )
    return 0


def run_memory_table(args: argparse.Namespace) -> int:
    return _guarded("memory-table", _memory_table, args)


def _memory_table(args: argparse.Namespace) -> int:
    from infbench.memory.table import write_table

    out = Path(args.out)
    write_table([Path(p) for p in args.estimates], [Path(p) for p in args.measured], out, args.gpu_util)
    print(f"wrote {out}")
    return 0
