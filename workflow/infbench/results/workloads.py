"""results/tables/workloads.md: the workloads users serve, one section per kind that ran.

- Capacity (requests/min at the SLO): models x engines, then every rate tried with its figures;
- Conversations: TTFT, tokens/s and prompt tokens per turn (later turns carry the history);
- Shared prefix: throughput and TTFT of groups sharing a system prompt;
  (these two and the trace's: the share of prompt tokens the engine served from its cache, and the
  scenario's cache state, warm unless declared cold);
- Synthetic sizes: per (input, output) pair, with the prompt tokens planned against those counted;
- Trace replay: offered against achieved rate, latencies and the client's schedule error.

A scenario's class names its section (`section`, measure/scenarios.py). Figures come from the merge's
summaries (steps of a capacity search included) and its per-request rows (tables.REQUEST_COLUMNS).
"""

from __future__ import annotations

import json

import polars as pl

from infbench.handoff import MergePlan
from infbench.results import routing, runstatus

PERCENTILES = (0.5, 0.9)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [" | ".join(header), " | ".join("---" for _ in header), *(" | ".join(row) for row in rows)]


def _scenarios(plan: MergePlan, section: str) -> list[str]:
    return [name for name in plan.scenarios if getattr(routing.scenario_class(plan, name), "section", None) == section]


def _ok(requests: pl.DataFrame, scenario: str) -> pl.DataFrame:
    return requests.filter((pl.col("scenario") == scenario) & pl.col("ok"))


def _per_group(requests: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """n, errors and the latency figures of successful requests per group of `keys`."""
    ok = pl.col("ok")
    tpot = (pl.col("latency_s") - pl.col("ttft_s")) / (pl.col("completion_tokens") - 1)
    return (
        requests.group_by(keys, maintain_order=True)
        .agg(
            n=pl.len(),
            errors=(~ok).sum(),
            ttft_p50=pl.col("ttft_s").filter(ok).quantile(0.5, "linear"),
            ttft_p90=pl.col("ttft_s").filter(ok).quantile(0.9, "linear"),
            tpot_p50=tpot.filter(ok & (pl.col("completion_tokens") >= 2)).quantile(0.5, "linear"),
            tokens_per_s=(pl.col("completion_tokens") / pl.col("latency_s")).filter(ok).mean(),
            prompt_tokens=pl.col("prompt_tokens").filter(ok).mean(),
            completion_tokens=pl.col("completion_tokens").filter(ok).mean(),
            first_send=pl.col("send_time").filter(ok).min(),
            last_end=(pl.col("send_time") + pl.col("latency_s")).filter(ok).max(),
            ok_n=ok.sum(),
            # prompt tokens the engine said came from its cache, of those of requests that said
            cached_sum=pl.col("cached_prompt_tokens").filter(ok).sum(),
            cached_of=pl.col("prompt_tokens").filter(ok & pl.col("cached_prompt_tokens").is_not_null()).sum(),
            cache=pl.col("cache").drop_nulls().unique().sort().str.join("+"),
            off_plan=(ok & pl.col("planned_prompt_tokens").is_not_null())
            .and_(pl.col("prompt_tokens").ne_missing(pl.col("planned_prompt_tokens")))
            .sum(),
        )
        .with_columns(
            requests_per_min=pl.when(pl.col("last_end") > pl.col("first_send")).then(
                pl.col("ok_n") / (pl.col("last_end") - pl.col("first_send")) * 60
            ),
            cached_share=pl.when(pl.col("cached_of") > 0).then(pl.col("cached_sum") / pl.col("cached_of")),
        )
        .sort(keys)
    )


def _cached(row: dict) -> str:
    """The share of prompt tokens served from the engine's cache, with the scenario's cache state;
    n/a where the engine does not say (transformers serve)."""
    share = row["cached_share"]
    text = "n/a" if share is None else f"{share:.1%}"
    return f"{text} ({row['cache']})" if row["cache"] else text


def _who(plan: MergePlan, engine: str, model: str) -> list[str]:
    return [plan.engines.get(engine, engine), plan.models.get(model, model)]


# --- capacity --------------------------------------------------------------------------------------


OFFERED_OFF = 0.05  # a passing step's offered rate is shown beside its nominal one past this share


def capacity_section(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> list[str]:
    lines = []
    for scenario in _scenarios(plan, "capacity"):
        steps = df.filter((pl.col("scenario") == scenario) & pl.col("step_rate").is_not_null())
        verdicts = _step_verdicts(requests.filter(pl.col("scenario") == scenario))
        slo = next((json.loads(s) for s in verdicts["slo"].drop_nulls().to_list()), {})
        limits = ", ".join(f"{key} <= {_limit(key, value)}" for key, value in slo.items()) or "none recorded"
        lines += [f"## Capacity (requests/min at the SLO), scenario {scenario}", "", f"SLO: {limits}.", ""]
        header = ["Model", *plan.engines.values()]
        rows = []
        for model, model_label in plan.models.items():
            cells = []
            for engine in plan.engines:
                server = servers[(engine, model)]
                failed = runstatus.failed_cell(server)
                if failed or server.status == "skipped":
                    cells.append(failed or server.reason or "n/a")
                    continue
                passed, failing = _bracket(verdicts, engine, model)
                if passed is None and failing is None:
                    cells.append("n/a")
                    continue
                text = f"{passed * 60:.1f}" if passed is not None else "none passed"
                offered = _verdict(verdicts, engine, model, passed)["offered"] if passed is not None else None
                drawn = f"offered {offered * 60:.1f}; " if offered and abs(offered / passed - 1) > OFFERED_OFF else ""
                text += f" ({drawn}fails at {failing * 60:.1f})" if failing is not None else f" ({drawn}none failed)"
                cells.append(text)
            rows.append([model_label, *cells])
        lines += _table(header, rows)
        lines += [
            "",
            f"A rate is a step's nominal rate; where the step's random draw offered more than {OFFERED_OFF:.0%} off"
            " it, the offered rate follows (few requests per step: raise duration_s or min_requests, or use"
            " arrival: constant).",
        ]
        lines += [
            "",
            "Every rate tried, lowest first (req/min: `rate` the step's nominal rate, `offered` the sends its"
            " draw planned in the counted window, `completed` those that ended in it; figures of the counted"
            " requests):",
            "",
        ]
        step_rows = []
        for row in steps.sort("engine", "model", "step_rate").iter_rows(named=True):
            verdict = _verdict(verdicts, row["engine"], row["model"], row["step_rate"])
            figures = [f"{key} {_limit(key, _figure(row, key))}" for key in slo]
            step_rows.append(
                [
                    *_who(plan, row["engine"], row["model"]),
                    f"{row['step_rate'] * 60:.1f}",
                    _num(None if verdict["offered"] is None else verdict["offered"] * 60, 1),
                    _num(None if verdict["achieved"] is None else verdict["achieved"] * 60, 1),
                    str(row["n"]),
                    str(row["errors"]),
                    "; ".join(figures) or "n/a",
                    verdict["text"],
                ]
            )
        header = ["engine", "model", "rate", "offered", "completed", "n", "errors", "measured", "verdict"]
        lines += _table(header, step_rows)
        lines.append("")
    return lines


def _step_verdicts(requests: pl.DataFrame) -> pl.DataFrame:
    return requests.group_by("engine", "model", "rate").agg(
        passed=pl.col("step_passed").drop_nulls().first(),
        saturated=pl.col("saturated").fill_null(False).any(),
        offered=pl.col("offered_rate").drop_nulls().first(),
        achieved=pl.col("achieved_rate").drop_nulls().first(),
        slo=pl.col("slo").drop_nulls().first(),
    )


def _bracket(verdicts: pl.DataFrame, engine: str, model: str) -> tuple[float | None, float | None]:
    """The highest passing rate and the lowest failing rate above it (requests/s)."""
    part = verdicts.filter((pl.col("engine") == engine) & (pl.col("model") == model))
    passing = part.filter(pl.col("passed"))["rate"].to_list()
    best = max(passing) if passing else None
    failing = part.filter(~pl.col("passed") & (pl.col("rate") > (best or 0)))["rate"].to_list()
    return best, min(failing) if failing else None


def _verdict(verdicts: pl.DataFrame, engine: str, model: str, rate: float) -> dict:
    part = verdicts.filter((pl.col("engine") == engine) & (pl.col("model") == model) & (pl.col("rate") == rate))
    if part.is_empty():
        return {"text": "n/a", "offered": None, "achieved": None}
    row = part.row(0, named=True)
    text = "pass" if row["passed"] else "fail (saturated)" if row["saturated"] else "fail"
    return {"text": text, "offered": row["offered"], "achieved": row["achieved"]}


def _figure(row: dict, key: str) -> float | None:
    if key == "error_rate":
        return row["errors"] / row["n"] if row["n"] else None
    return row.get(key)


def _limit(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if key == "error_rate" else f"{value * 1e3:.0f} ms"


# --- conversations, shared prefix, synthetic sizes, trace replay ------------------------------------


def conversation_section(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> list[str]:
    lines = []
    for scenario in _scenarios(plan, "conversation"):
        turns = _per_group(requests.filter(pl.col("scenario") == scenario), ["engine", "model", "turn"])
        lines += [
            f"## Conversations, scenario {scenario}: per turn",
            "",
            "Turn k is sent with turns 1..k-1 and the engine's own answers to them, so its prompt grows; "
            "an engine that keeps the conversation's prefix cached answers later turns sooner.",
            "",
        ]
        rows = [
            [
                *_who(plan, r["engine"], r["model"]),
                str(r["turn"]),
                str(r["n"]),
                str(r["errors"]),
                _num(r["prompt_tokens"], 1),
                _ms(r["ttft_p50"]),
                _ms(r["ttft_p90"]),
                _num(r["tokens_per_s"]),
                _num(r["completion_tokens"], 1),
                _cached(r),
            ]
            for r in turns.iter_rows(named=True)
        ]
        header = ["engine", "model", "turn", "n", "errors", "prompt tok", "TTFT p50 ms", "TTFT p90 ms", "tok/s mean"]
        lines += _table([*header, "completion tok", "cached prompt %"], rows) + [""]
    return lines


def shared_prefix_section(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> list[str]:
    lines = []
    for scenario in _scenarios(plan, "shared_prefix"):
        whole = _per_group(requests.filter(pl.col("scenario") == scenario), ["engine", "model"])
        lines += [
            f"## Shared prefix, scenario {scenario}",
            "",
            "Groups of requests sharing one system prompt, groups mixed, a closed loop; an engine that "
            "caches the shared prefix computes it once per group.",
            "",
        ]
        rows = [
            [
                *_who(plan, r["engine"], r["model"]),
                str(r["n"]),
                str(r["errors"]),
                _num(r["prompt_tokens"], 1),
                _num(r["requests_per_min"]),
                _ms(r["ttft_p50"]),
                _ms(r["ttft_p90"]),
                _ms(r["tpot_p50"]),
                _cached(r),
            ]
            for r in whole.iter_rows(named=True)
        ]
        header = ["engine", "model", "n", "errors", "prompt tok", "req/min", "TTFT p50 ms", "TTFT p90 ms"]
        lines += _table([*header, "TPOT p50 ms", "cached prompt %"], rows) + [""]
    return lines


def synthetic_section(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> list[str]:
    lines = []
    for scenario in _scenarios(plan, "synthetic"):
        sizes = _per_group(
            requests.filter(pl.col("scenario") == scenario),
            ["engine", "model", "planned_prompt_tokens", "max_tokens"],
        )
        lines += [
            f"## Synthetic sizes, scenario {scenario}",
            "",
            "Exactly I prompt tokens (the chat template's included) and O output tokens per request; "
            "'prompt tok' is what the engine counted (it differs from I only if its chat template does).",
            "",
        ]
        rows = [
            [
                *_who(plan, r["engine"], r["model"]),
                f"{r['planned_prompt_tokens']}/{r['max_tokens']}",
                str(r["n"]),
                str(r["errors"]),
                _num(r["prompt_tokens"], 1) + (f" ({r['off_plan']} off plan)" if r["off_plan"] else ""),
                _num(r["completion_tokens"], 1),
                _num(r["requests_per_min"]),
                _ms(r["ttft_p50"]),
                _ms(r["tpot_p50"]),
                _num(r["tokens_per_s"]),
            ]
            for r in sizes.iter_rows(named=True)
        ]
        header = ["engine", "model", "I/O", "n", "errors", "prompt tok", "completion tok", "req/min", "TTFT p50 ms"]
        lines += _table([*header, "TPOT p50 ms", "tok/s mean"], rows) + [""]
    return lines


def trace_section(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> list[str]:
    lines = []
    for scenario in _scenarios(plan, "trace"):
        part = requests.filter(pl.col("scenario") == scenario)
        whole = _per_group(part, ["engine", "model"])
        summaries = df.filter((pl.col("scenario") == scenario) & pl.col("step_rate").is_null())
        lines += [
            f"## Trace replay, scenario {scenario}",
            "",
            "Requests sent at the trace's timestamps (open loop, latencies from the planned time), each "
            "with the trace's output length; prefixes shared as the trace's hash ids say. 'completed' is "
            "requests/s from the first send to the last end; dispatch lag p99: how late the client sent.",
            "",
        ]
        rows = []
        for r in whole.iter_rows(named=True):
            summary = summaries.filter((pl.col("engine") == r["engine"]) & (pl.col("model") == r["model"]))
            s = summary.row(0, named=True) if summary.height else {}
            offered = part.filter((pl.col("engine") == r["engine"]) & (pl.col("model") == r["model"]))["rate"]
            rows.append(
                [
                    *_who(plan, r["engine"], r["model"]),
                    str(r["n"]),
                    str(r["errors"]),
                    _num(offered.drop_nulls().max() if offered.len() else None, 3),
                    _num(None if r["requests_per_min"] is None else r["requests_per_min"] / 60, 3),
                    _num(r["prompt_tokens"], 1) + (f" ({r['off_plan']} off plan)" if r["off_plan"] else ""),
                    _ms(s.get("ttft_p50_s")),
                    _ms(s.get("ttft_p90_s")),
                    _ms(s.get("tpot_p90_s")),
                    _num(s.get("latency_p90_s"), 3),
                    _ms(s.get("dispatch_lag_p99_s")),
                    _cached(r),
                ]
            )
        header = ["engine", "model", "n", "errors", "offered req/s", "completed req/s", "prompt tok"]
        header += ["TTFT p50 ms", "TTFT p90 ms", "TPOT p90 ms", "latency p90 s", "dispatch lag p99 ms"]
        header += ["cached prompt %"]
        lines += _table(header, rows) + [""]
    return lines


SECTIONS = {
    "capacity": capacity_section,
    "conversation": conversation_section,
    "shared_prefix": shared_prefix_section,
    "synthetic": synthetic_section,
    "trace": trace_section,
}


def workloads_table(df: pl.DataFrame, requests: pl.DataFrame, plan: MergePlan, servers: dict) -> str:
    """workloads.md: every section whose kind ran (df: the summaries with steps; requests: per request)."""
    lines = ["# Workloads", ""]
    body = [line for render in SECTIONS.values() for line in render(df, requests, plan, servers)]
    if not body:
        body = ["No conversation, shared-prefix, synthetic, trace or capacity scenario in this run.", ""]
    return "\n".join(lines + body).rstrip() + "\n"
