"""Text rendering of an Estimate, and the byte and count formats the tables share."""

from __future__ import annotations

from infbench.memory import quant
from infbench.memory.gpus import GB, GIB
from infbench.memory.records import Estimate


def fmt_bytes(n: int | float) -> str:
    """Binary units: 1 GiB = 2**30 bytes."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_count(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def answer_lines(est: Estimate) -> list[str]:
    """The answer, before any detail: fits or not, on what, KV tokens, concurrency, decode bound."""
    setup = f"vLLM {est.vllm_version}, {est.dtype} weights, {est.kv_dtype} KV, max-model-len {est.context:,}"
    fitting = [g for g in est.fits if g.fits]
    best = est.smallest
    if best is None:
        worst = est.fits[-1]
        where = "any catalogue GPU" if len(est.fits) > 1 else worst.setup
        return [f"Answer: does not fit on {where} ({setup})", f"  {worst.setup}: {worst.reason}"]
    head = f"Answer: fits on {best.setup}" + (
        f" (smallest of {len(fitting)} of {len(est.fits)} GPU types that fit)" if len(est.fits) > 1 else ""
    )
    cap = f" (capped by max_num_seqs {best.max_num_seqs})" if best.max_sequences == best.max_num_seqs else ""
    lines = [
        f"{head}; {setup}",
        f"  KV cache      {best.kv_tokens:,} tokens, {best.kv_concurrency:,.2f}x concurrency "
        f"for {est.context:,}-token requests, {best.max_sequences} at once{cap}",
    ]
    if best.decode_bound_tokens_s:
        lines.append(
            f"  Decode bound  {best.decode_bound_tokens_s:,.0f} tok/s for one request at {est.context:,} tokens "
            f"({best.bandwidth_bytes_s / GB:,.0f} GB/s / {fmt_bytes(best.decode_bytes_per_token)} read per token)"
        )
    if est.cpu_bound is not None:
        c = est.cpu_bound
        lines.append(
            f"  Local CPU     {c.tokens_s:.3g} tok/s at most ({c.bandwidth_bytes_s / GB:.1f} GB/s, "
            f"{c.bandwidth_source}; {fmt_bytes(c.bytes_per_token)} per token)"
        )
    return lines


def gpu_table_lines(est: Estimate) -> list[str]:
    lines = [
        f"vLLM {est.vllm_version} at gpu_memory_utilization={est.gpu_util}, {est.dtype} weights, "
        f"{est.kv_dtype} KV, sequences of {est.context} tokens, batch {est.batch}, {est.sampler} sampler"
        + (", --enforce-eager" if est.enforce_eager else ""),
        f"  {'GPU':<15} {'TP':>2} {'fits':<4} {'CUDA total':>10} {'weights/GPU':>11} {'act/GPU':>9} "
        f"{'graphs':>8} {'KV pool/GPU':>11} {'KV tokens':>10} {'seqs':>5} {'decode bound':>13}  note",
    ]
    for g in est.fits:
        bound = f"{g.decode_bound_tokens_s:,.0f} tok/s" if g.decode_bound_tokens_s else "-"
        cap = f" (cap max_num_seqs={g.max_num_seqs})" if g.fits and g.max_sequences == g.max_num_seqs else ""
        lines.append(
            f"  {g.gpu:<15} {g.tp:>2} {'yes' if g.fits else 'no':<4} "
            f"{fmt_bytes(g.gpu_memory_bytes):>10} "
            f"{fmt_bytes(g.weights_bytes):>11} {fmt_bytes(g.activation_bytes):>9} {fmt_bytes(g.cuda_graphs_bytes):>8} "
            f"{fmt_bytes(max(g.kv_pool_bytes, 0)):>11} {g.kv_tokens:>10,} {g.max_sequences:>5} "
            f"{bound:>13}" + ("" if g.fits else f"  {g.reason}") + cap
        )
    return lines


def render_text(est: Estimate) -> str:
    """The answer first, then the GPU table, then how it was worked out."""
    f = est.facts
    roles = f.params.by_role()
    lines = [f"{f.name}  ({f.model_type}; {f.source})", "", *answer_lines(est), "", *gpu_table_lines(est)]
    lines += [
        "",
        "Details",
        f"Parameters   {f.params.total:,} ({fmt_count(f.params.total)}), counted from "
        + ("safetensors headers" if f.params.source == "safetensors" else "the meta-device model")
        + ("; embeddings tied to lm_head" if f.params.tied_embeddings else "; untied lm_head"),
        "             " + ", ".join(f"{r} {fmt_count(n)}" for r, n in roles.items() if n),
    ]
    if f.moe is not None:
        m = f.moe
        lines.append(
            f"MoE          {m.experts} experts, top-{m.top_k}, expert width {m.expert_intermediate}"
            + (f", shared experts {m.shared_intermediate}" if m.shared_intermediate else "")
            + f"; {m.moe_layers} MoE layers, {m.dense_layers} dense"
        )
    if f.quant is not None:
        q = f.quant
        lines.append(
            f"Quantization {q.method} -> {quant.SCHEMES[q.scheme].label}"
            + (f"; kept 16-bit: {', '.join(q.skip)}" if q.skip else "")
        )
    lines += ["", "Weights (as stored)"]
    for name, scheme in quant.SCHEMES.items():
        mark = "  <- served" if name == est.dtype else ""
        lines.append(f"  {scheme.label:<12} {fmt_bytes(est.weights_bytes[name]):>11}{mark}")
    kv = f.kv
    kinds = ", ".join(f"{n} {k}" for k, n in kv.kinds().items())
    lines += [
        "",
        f"KV cache     {kv.attention}: {kv.num_layers} layers ({kinds}) x {kv.num_kv_heads} KV "
        f"heads (of {kv.num_heads}) x head_dim {kv.head_dim}",
        "  per token  " + "  ".join(f"{k} {fmt_bytes(b)}" for k, b in est.kv_bytes_per_token.items()),
        f"  one sequence of {est.context} tokens ({est.kv_dtype}): {fmt_bytes(est.kv_bytes_per_sequence)}",
    ]
    if kv.windows():
        lines.append(f"  sliding windows: {kv.windows()} tokens")
    for note in kv.notes:
        lines.append(f"  note: {note}")
    lines += ["", "Overheads (per GPU; recomputed for each GPU and TP in the table above)"]
    for o in est.overheads:
        lines.append(f"  {o.name:<16} {fmt_bytes(o.bytes):>10}  {o.assumption}")
    lines += ["", f"CPU footprint (RSS: {est.dtype} weights + engine runtime)"]
    for engine, cpu in est.cpu_footprint.items():
        lines.append(
            f"  {engine:<13} loaded {fmt_bytes(cpu['loaded_bytes']):>10}, idle "
            f"{fmt_bytes(cpu['idle_bytes']):>10}  ({cpu['assumption']})"
        )
    if est.file_bytes is not None:
        lines += [
            "",
            f"Checkpoint files {fmt_bytes(est.file_bytes)}; vLLM holds "
            f"{fmt_bytes(est.resident_bytes)} on one GPU (tied head once, vocab padded to 64)",
        ]
    lines.append("")
    lines.append(
        f"Decode bound: one request, {est.context} tokens of context: memory bandwidth / "
        "(resident weights + KV cache) per GPU; published bandwidths (gpus.py)"
    )
    for note in est.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)
