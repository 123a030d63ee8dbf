"""The estimator against published vLLM start-up logs: one row per ground-truth case.

Not a test (tests/unit/memory/test_vllm_fit.py holds the tolerances): the table a closing note
quotes, logged against estimated weights per GPU and KV-cache tokens, with the error of each, and
what vLLM did at start-up (fits, refuses, out of memory while capturing graphs) beside what the
estimate says.

    PYTHONPATH=workflow python bench_scripts/memory_ground_truth.py [--data tests/data/vllm_ground_truth.json]

Where a row logs no token count, its logged pool (GiB) is priced at the estimator's bytes per token.
It also runs an older checkout of the estimator (PYTHONPATH pointing at it): flags the old
build_estimate lacks are left out, and a case it cannot read says so in its row.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _estimator():
    """build_estimate and model_facts, wherever this checkout keeps them."""
    from infbench.memory.estimate import build_estimate

    try:
        from infbench.memory.facts import model_facts
    except ImportError:  # before estimate.py was split
        from infbench.memory.estimate import model_facts
    return build_estimate, model_facts


def _outcome(fit) -> str:
    if fit.fits:
        return "fits"
    if "sequence" in fit.reason and "KV pool holds" in fit.reason:
        return "refuses"
    if "capturing" in fit.reason or "graphs" in fit.reason:
        return "oom_capture"
    return "no: " + fit.reason[:40]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "vllm_ground_truth.json")
    args = ap.parse_args(argv)
    from infbench.memory import quant
    from infbench.memory.gpus import GIB, custom_gpu, find_gpu

    build_estimate, model_facts = _estimator()
    accepted = set(inspect.signature(build_estimate).parameters)
    rows = json.loads(args.data.read_text())["rows"]
    print(
        "| case | vLLM | logged weights GiB | est. weights GiB | err % | logged KV tokens | est. KV tokens | err % "
        "| vLLM did | estimate says |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for row in rows:
        rep = row["reported"]
        try:
            gpu = find_gpu(row["gpu"])
            if rep.get("total_gpu_memory_gib"):
                gpu = custom_gpu(rep["total_gpu_memory_gib"], like=gpu)
            kwargs = {
                "dtype": row.get("dtype"),
                "context": row["max_model_len"],
                "gpus": [gpu],
                "tp": row["tp"],
                "gpu_util": row["gpu_memory_utilization"],
                "vllm_version": row["vllm_version"],
                "sampler": row.get("sampler") or "native",
            }
            for key in ("max_num_seqs", "max_num_batched_tokens", "enforce_eager", "disable_custom_all_reduce"):
                if row.get(key) is not None:
                    kwargs[key] = row[key]
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
            facts = model_facts(str(args.data.parent / row["config"]))
            est = build_estimate(facts, **kwargs)
        except Exception as exc:  # the old code cannot read every new case: say so in the row
            print(f"| {row['id']} | {row['vllm_version']} | {rep['weights_gib']} | error: {exc} | | | | | | |")
            continue
        fit = est.fits[0]
        weights = fit.weights_bytes / GIB
        tokens = rep.get("kv_tokens")
        if not tokens and rep.get("kv_cache_gib"):
            per_token = facts.kv.bytes_per_token(quant.KV_DTYPE_BYTES[est.kv_dtype], row["tp"])
            tokens = round(rep["kv_cache_gib"] * GIB / per_token)
        w_err = (weights - rep["weights_gib"]) / rep["weights_gib"] * 100
        logged = f"{tokens:,}" if tokens else "-"
        t_err = f"{(fit.kv_tokens - tokens) / tokens * 100:+.1f}" if tokens else "-"
        if rep.get("engine_kv_tokens"):
            engine = rep["engine_kv_tokens"]
            logged += f" (engine: {engine:,})"
            t_err += f" ({(fit.kv_tokens - engine) / engine * 100:+.1f})"
        did = row.get("expect", "fits")
        says = _outcome(fit)
        if row.get("expect_enforce_eager") and "enforce_eager" in accepted:
            eager = build_estimate(facts, **{**kwargs, "enforce_eager": True}).fits[0]
            did += f"; eager: {row['expect_enforce_eager']}"
            says += f"; eager: {_outcome(eager)}"
        print(
            f"| {row['id']} | {row['vllm_version']} | {rep['weights_gib']:.2f} | {weights:.2f} | {w_err:+.1f} "
            f"| {logged} | {fit.kv_tokens:,} | {t_err} | {did} | {says} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
