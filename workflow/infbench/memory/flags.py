"""The estimate that the command-line flags describe: one code path for `infbench estimate` and
its page (`--web`), so the two always agree."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from infbench import layout
from infbench.handoff import Bandwidth, HandoffError
from infbench.memory.errors import EstimateError

if TYPE_CHECKING:
    from infbench.memory.records import Estimate

BANDWIDTH_FILE = layout.BANDWIDTH  # what the pipeline's memory_bandwidth rule writes


def estimate_from_args(args: argparse.Namespace, model: str | None = None) -> Estimate:
    """The estimate the CLI flags describe (shared with the page)."""
    from infbench.memory.estimate import build_estimate
    from infbench.memory.facts import model_facts
    from infbench.memory.gpus import custom_gpu, find_gpu

    gpus = None
    like = find_gpu(args.gpu) if args.gpu else None
    if args.gpu_mem is not None or args.bandwidth is not None:
        gib = args.gpu_mem if args.gpu_mem is not None else (like.memory_bytes / 2**30 if like else None)
        if gib is None:
            raise EstimateError("--bandwidth needs --gpu or --gpu-mem")
        gpus = [custom_gpu(gib, like, args.bandwidth)]
    elif like is not None:
        gpus = [like]
    facts = model_facts(model or args.model)  # a bad MODEL fails here, before any measuring
    return build_estimate(
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
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enforce_eager=args.enforce_eager,
        disable_custom_all_reduce=args.disable_custom_all_reduce,
        cpu_runtimes=_cpu_runtimes(args),
    )


def _cpu_runtimes(args: argparse.Namespace) -> dict | None:
    """Each engine kind's CPU memory (engines.base.cpu_runtimes), handed in by infbench.cli: the
    function itself (the command line) or its result (the page)."""
    runtimes = getattr(args, "cpu_runtimes", None)
    return runtimes() if callable(runtimes) else runtimes


def _cpu_bandwidth(value: str | None) -> tuple[float, str] | None:
    """The local CPU's bandwidth: given, measured now when asked, or the pipeline's measurement."""
    if value is None:
        path = Path(BANDWIDTH_FILE)
        if not path.is_file():
            return None
        try:
            return Bandwidth.read(path).bandwidth_bytes_s, f"measured by the pipeline, {BANDWIDTH_FILE}"
        except (OSError, HandoffError):
            return None  # a damaged file only costs the CPU line
    if value == "measure":
        from infbench.memory.bandwidth import measure_read_bandwidth

        m = measure_read_bandwidth(buffer_mib=64, repeats=3)
        load = f", load {m.load_1min:.2f}" if m.load_1min is not None else ""
        return m.bandwidth_bytes_s, f"read benchmark now, {m.threads} threads{load}"
    try:
        gb_s = float(value)
    except ValueError:
        raise EstimateError(f"--cpu-bandwidth takes GB/s or no value (measure now), got {value!r}") from None
    if gb_s <= 0:
        raise EstimateError(f"--cpu-bandwidth must be positive, got {value}")
    return gb_s * 1e9, "--cpu-bandwidth"
