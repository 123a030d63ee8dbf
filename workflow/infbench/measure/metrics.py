"""Metric definitions, in one place (docs/metrics.md says what they mean), as polars expressions.

- tokens/s of a request = completion_tokens / end-to-end latency (only completion tokens count).
- TTFT: send to first content chunk. TPOT = (latency - TTFT) / (completion_tokens - 1).
- Throughput: successful requests per minute over the scenario's wall time (first send to last end).
- ITL: per token. A content chunk of k tokens that came g seconds after the previous one gives k
  inter-token latencies of g/k (the first chunk's tokens are in TTFT).
- Client lag: the client's own dispatch lag and read lag (client.py), p99 over requests; and how much
  it could move the figures it touches: its share of the time measured (lag over latency, lag over
  TTFT; lag = dispatch lag + the request's largest read lag). A run whose share of latency passes its
  limit is flagged. Goodput: requests/s that met the SLOs (TTFT and TPOT).
Failed requests are counted in `errors`, never dropped silently.

Per-request metrics are columns added to a frame of raw records (recordframe.RECORD_SCHEMA);
a scenario's summary is one group_by over them. The merge, verify, the plots, calibrate and the
bench job's own logs all go through `summarize_frame`. Two per-record helpers stay in plain Python
because the bench job needs them live, per request: `tokens_per_second` (its progress bar) and
`percentile` (the client's read lag of one request); tests/unit/measure/test_metrics.py checks they agree with
the expressions. Figures are the ones the earlier per-record Python code gave, to the last bit: the exact
percentiles, means and sd come from the general statistics engine in measure/stats.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Per-record figures live in a polars-free module (the bench job runs without polars); re-exported here.
from infbench.measure.recordmath import percentile, tokens_per_second  # noqa: F401
from infbench.measure.records import RequestRecord
from infbench.measure.stats import QUANTILES, exact_moments, exact_sd, grouped_percentiles

# -- per request --------------------------------------------------------------------------------

OK = pl.col("error").is_null() & pl.col("status").eq_missing(200) & pl.col("latency_s").is_not_null()
_ok = pl.col("ok")
TOKENS_PER_S = pl.when(
    _ok & (pl.col("completion_tokens").fill_null(0) != 0) & (pl.col("latency_s").fill_null(0.0) != 0.0)
).then(pl.col("completion_tokens") / pl.col("latency_s"))
TPOT = pl.when(_ok & pl.col("ttft_s").is_not_null() & (pl.col("completion_tokens").fill_null(0) >= 2)).then(
    (pl.col("latency_s") - pl.col("ttft_s")) / (pl.col("completion_tokens") - 1)
)
# How much of a request's measured times could be the client's own delay: it sent late by its
# dispatch lag (latencies count from the plan), and stamped chunks late by at most its largest read lag.
CLIENT_LAG = pl.col("dispatch_lag_s").fill_null(0.0).clip(lower_bound=0.0) + pl.col("read_lag_max_s").fill_null(0.0)
# Success with TTFT and TPOT within the record's SLOs (an absent SLO is met).
MEETS_SLO = (
    _ok
    & pl.col("ttft_s").is_not_null()
    & (pl.col("slo_ttft_s").is_null() | (pl.col("ttft_s") <= pl.col("slo_ttft_s")))
    & (pl.col("slo_tpot_s").is_null() | pl.col("tpot_s").is_null() | (pl.col("tpot_s") <= pl.col("slo_tpot_s")))
).fill_null(False)


def request_metrics(records: pl.LazyFrame) -> pl.LazyFrame:
    """The records with ok, tokens_per_s, tpot_s, end_time (send + latency), client_lag_s and meets_slo added."""
    return (
        records.with_columns(ok=OK)
        .with_columns(
            tokens_per_s=TOKENS_PER_S,
            tpot_s=TPOT,
            end_time=pl.col("send_time") + pl.col("latency_s"),
            chunk_tokens_sum=pl.col("chunk_tokens").list.sum(),
            client_lag_s=CLIENT_LAG,
        )
        .with_columns(meets_slo=MEETS_SLO)
    )


def itl_samples(records: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Per-token ITL of successful requests, one row per content chunk after the first: `value` =
    gap / k, `weight` = k (that many tokens; tokens per chunk from the record, else one)."""
    times, tokens = pl.col("chunk_times_s"), pl.col("chunk_tokens")
    after_first = times.list.len() - 1
    known = tokens.list.len() == times.list.len()
    # Each chunk after the first beside the one before it, as lists flattened together (list slices
    # are cheap views; a gap down one flat column would need shifts across records).
    return (
        records.filter(OK)
        .select(
            *keys,
            time=times.list.slice(1),
            previous=times.list.head(after_first),
            weight=pl.when(known).then(tokens.list.slice(1)).otherwise(pl.lit(1, pl.Int64).repeat_by(after_first)),
        )
        .explode(["time", "previous", "weight"])
        .with_columns(pl.col("weight").clip(lower_bound=1))
        .select(*keys, value=(pl.col("time") - pl.col("previous")) / pl.col("weight"), weight="weight")
    )


def inter_token_latencies(record: RequestRecord) -> list[float]:
    """One record's per-token ITLs (itl_samples, each value repeated by its weight), in chunk order."""
    from infbench.measure.recordframe import records_frame

    samples = itl_samples(records_frame([record]).lazy(), []).collect()
    return [value for value, weight in samples.iter_rows() for _ in range(weight)]


# -- per scenario -------------------------------------------------------------------------------


@dataclass
class ScenarioSummary:
    engine: str
    model: str
    scenario: str
    concurrency: int
    n: int
    errors: int
    tokens_per_s_mean: float | None
    tokens_per_s_sd: float | None
    requests_per_min: float | None
    output_tokens_per_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_p99_s: float | None
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    wall_time_s: float | None
    itl_p50_s: float | None = None
    itl_p90_s: float | None = None
    itl_p99_s: float | None = None
    # The client's own error (client.py): dispatch lag and read lag p99 over requests, mean connect
    # time of the requests that opened a connection; the share of the latency (and of the TTFT) that
    # could be the client's own delay, i.e. how far it could move the figures it touches; flagged
    # when the latency share passes the limit.
    dispatch_lag_p99_s: float | None = None
    read_lag_p99_s: float | None = None
    connect_mean_s: float | None = None
    client_lag_share: float | None = None  # sum of lags / sum of latencies: tokens/s, requests/min, latency
    client_lag_ttft_share: float | None = None  # sum of lags / sum of TTFTs
    client_lag_share_limit: float | None = None
    client_lag_flag: bool = False
    workers: int = 1
    chunk_tokens_counted_by: str | None = None
    rate: float | None = None  # offered requests/s (open loop, sweep step)
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    goodput_rps: float | None = None  # requests/s that met both SLOs
    slo_passed: bool | None = None  # TTFT and TPOT p99 within the SLOs, no errors
    # The scenario's declared cache state, and the share of the prompt tokens the engine said it served
    # from its prefix cache (over the requests whose engine said; None when none did).
    cache: str | None = None
    cached_prompt_share: float | None = None
    step_rate: float | None = None  # this row is one step of a sweep, at this offered rate; None: the whole scenario


RUN = "run"  # which scenario run (engine, model, scenario) of a batch a record belongs to
STEP = "step"  # null for a whole scenario, the offered rate for one sweep step
PART = "part"  # one integer per (run, step): the key every figure is grouped by
_PERCENTILE_METRICS = {
    "ttft": "ttft_s",
    "tpot": "tpot_s",
    "latency": "latency_s",
    "dispatch_lag": "dispatch_lag_s",
    "read_lag": "read_lag_p99_s",
    "itl": None,
}
_METRIC = pl.Enum(list(_PERCENTILE_METRICS))
# The record fields the summaries read: a merge reads only these (and the request columns it shows).
SUMMARY_FIELDS = [
    "error",
    "status",
    "latency_s",
    "ttft_s",
    "completion_tokens",
    "prompt_tokens",
    "send_time",
    "chunk_times_s",
    "chunk_tokens",
    "chunk_tokens_counted_by",
    "concurrency",
    "worker",
    "rate",
    "slo_ttft_s",
    "slo_tpot_s",
    "client_lag_share_limit",
    "dispatch_lag_s",
    "read_lag_p99_s",
    "read_lag_max_s",
    "connect_s",
    "cached_prompt_tokens",
    "cache",
]


def summarize_runs(records: pl.LazyFrame, sweep_runs: list[int]) -> dict[tuple[int, float | None], dict]:
    """Raw records (at least SUMMARY_FIELDS, plus an integer RUN column) summarized by one group_by
    per figure: a row of ScenarioSummary figures per (run, step), step None for the whole run and,
    for the runs in `sweep_runs`, each offered rate."""
    frame = (
        request_metrics(records.select(RUN, *SUMMARY_FIELDS))
        .with_columns(pl.col(RUN).cast(pl.UInt32).alias(PART), _step_part(sweep_runs))
        .collect()
        .rechunk()
    )
    # A sweep step's records count twice: in their run's part and in their step's (STEP_PART).
    per_request = frame.drop("chunk_times_s", "chunk_tokens").lazy()
    per_request = pl.concat(
        [
            per_request.with_columns(pl.lit(None, pl.Float64).alias(STEP)),
            _as_steps(per_request).with_columns(pl.col("rate").alias(STEP)),
        ]
    )
    itl = (
        itl_samples(frame.lazy(), [PART, STEP_PART])
        .select(PART, STEP_PART, metric=pl.lit("itl", _METRIC), value="value", weight="weight")
        .collect()
        .lazy()
    )
    samples = pl.concat([_metric_samples(per_request), itl.drop(STEP_PART), _as_steps(itl).drop(STEP_PART)])
    table = (
        per_request.group_by(PART)
        .agg(pl.col(RUN, STEP).first())
        .collect()
        .join(_group_figures(per_request).collect(), on=PART, how="left")
        .join(_percentiles(samples), on=PART, how="left")
        .join(_exact_means(per_request), on=PART, how="left")
        .with_columns(_derived())
    )
    return {(row[RUN], row[STEP]): row for row in table.to_dicts()}


STEP_PART = "step_part"  # a sweep step's part: one integer per (run, rate), after every run's


def _step_part(sweep_runs: list[int]) -> pl.Expr:
    in_step = pl.col(RUN).is_in(sweep_runs) & pl.col("rate").is_not_null()
    step = pl.struct(RUN, "rate").rank("dense") + pl.col(RUN).max()
    return pl.when(in_step).then(step.cast(pl.UInt32)).alias(STEP_PART)


def _as_steps(lf: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of sweep steps, under their step's part."""
    return lf.filter(pl.col(STEP_PART).is_not_null()).with_columns(pl.col(STEP_PART).alias(PART))


def scenario_summaries(
    rows: dict[tuple[int, float | None], dict], run: int, engine: str, model: str, scenario: str
) -> list[ScenarioSummary]:
    """One run's summaries from summarize_runs: the whole scenario, then its steps by rate (step_rate set)."""
    out = [_summary(rows.get((run, None)) or _empty_row(), engine, model, scenario)]
    for rate in sorted(step for r, step in rows if r == run and step is not None):
        out.append(_summary(rows[(run, rate)], engine, model, scenario, step_rate=rate))
    return out


def summarize_frame(
    records: pl.DataFrame | pl.LazyFrame, engine: str, model: str, scenario: str, sweep_steps: bool = False
) -> list[ScenarioSummary]:
    """One scenario's raw records summarized (with sweep_steps: and each offered rate's)."""
    rows = summarize_runs(records.lazy().with_columns(pl.lit(0, pl.Int32).alias(RUN)), [0] if sweep_steps else [])
    return scenario_summaries(rows, 0, engine, model, scenario)


def summarize(records: list[RequestRecord], engine: str, model: str, scenario: str) -> ScenarioSummary:
    """summarize_frame for in-memory records (the bench job, the sweep runner, calibrate)."""
    from infbench.measure.recordframe import records_frame

    return summarize_frame(records_frame(records), engine, model, scenario)[0]


def _group_figures(lf: pl.LazyFrame) -> pl.LazyFrame:
    ok_only = lambda name: pl.col(name).filter(_ok)  # noqa: E731
    counted_by = pl.col("chunk_tokens_counted_by")
    return lf.group_by(PART).agg(
        concurrency=pl.col("concurrency").max(),
        n=pl.len().cast(pl.Int64),
        ok_n=_ok.sum().cast(pl.Int64),
        completion_total=ok_only("completion_tokens").fill_null(0).sum(),
        first_send=ok_only("send_time").min(),
        last_end=ok_only("end_time").max(),
        prompt_sum=ok_only("prompt_tokens").sum(),
        prompt_n=ok_only("prompt_tokens").count(),
        completion_sum=ok_only("completion_tokens").sum(),
        completion_n=ok_only("completion_tokens").count(),
        cached_sum=ok_only("cached_prompt_tokens").sum(),
        cached_of=pl.col("prompt_tokens").filter(_ok & pl.col("cached_prompt_tokens").is_not_null()).sum(),
        cached_n=ok_only("cached_prompt_tokens").count(),
        cache=pl.col("cache").drop_nulls().unique().sort().str.join("+"),
        client_lag_share_limit=pl.col("client_lag_share_limit").max(),
        lag_sum=ok_only("client_lag_s").sum(),
        latency_sum=ok_only("latency_s").sum(),
        ttft_lag_sum=pl.col("client_lag_s").filter(_ok & pl.col("ttft_s").is_not_null()).sum(),
        ttft_sum=ok_only("ttft_s").sum(),
        workers=pl.col("worker").n_unique().cast(pl.Int64),
        chunk_tokens_counted_by=counted_by.filter(_ok & (counted_by.fill_null("") != "")).unique().sort().str.join("+"),
        rates=pl.col("rate").drop_nulls().n_unique(),
        rate=pl.col("rate").max(),
        slo_ttft_s=pl.col("slo_ttft_s").drop_nulls().first(),
        slo_tpot_s=pl.col("slo_tpot_s").drop_nulls().first(),
        met_slo=pl.col("meets_slo").sum().cast(pl.Int64),
    )


def _metric_samples(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Long frame (part, metric, value, weight=1) of every per-request metric with percentiles but ITL."""
    columns = {metric: column for metric, column in _PERCENTILE_METRICS.items() if column}
    return (
        lf.filter(_ok)
        .select(PART, *(pl.col(column).alias(metric) for metric, column in columns.items()))
        .unpivot(index=PART, variable_name="metric", value_name="value")
        .filter(pl.col("value").is_not_null())
        .select(PART, pl.col("metric").cast(_METRIC), "value", weight=pl.lit(1, pl.Int64))
    )


def _percentiles(samples: pl.LazyFrame) -> pl.DataFrame:
    """Per part: {metric}_p{q}_s of every metric in the samples (grouped by part and metric as one integer)."""
    metrics = len(_PERCENTILE_METRICS)
    group = pl.col(PART).cast(pl.Int64) * metrics + pl.col("metric").to_physical()
    wide = grouped_percentiles(samples.with_columns(group=group)).select(
        (pl.col("group") // metrics).cast(pl.UInt32).alias(PART),
        (pl.col("group") % metrics).alias("metric"),
        pl.exclude("group"),
    )
    codes = {metric: code for code, metric in enumerate(_PERCENTILE_METRICS)}
    columns = {
        f"{metric}_p{q}_s": pl.col(f"p{q}").filter(pl.col("metric") == codes[metric]).first()
        for metric in _PERCENTILE_METRICS
        for q in QUANTILES
    }
    return wide.group_by(PART).agg(**columns)


def _exact_means(lf: pl.LazyFrame) -> pl.DataFrame:
    """Per part: tokens_per_s mean and sd, connect_s mean, to the last bit (see the module doc)."""
    samples = pl.concat(
        [
            lf.filter(pl.col("tokens_per_s").is_not_null()).select(
                PART, metric=pl.lit("tokens_per_s"), value="tokens_per_s"
            ),
            lf.filter(_ok & (pl.col("connect_s").fill_null(0.0) != 0.0)).select(
                PART, metric=pl.lit("connect"), value="connect_s"
            ),
        ]
    )
    sums = exact_moments(samples, [PART, "metric"])
    out: dict = {}
    for (part, metric), (n, sx, sxx) in sums.items():
        row = out.setdefault(
            part, {PART: part, "tokens_per_s_mean": None, "tokens_per_s_sd": None, "connect_mean_s": None}
        )
        mean = float(sx) / n
        if metric == "connect":
            row["connect_mean_s"] = mean
            continue
        row["tokens_per_s_mean"] = mean
        if n > 1:
            row["tokens_per_s_sd"] = exact_sd(n, sx, sxx)
    schema = {
        PART: pl.UInt32,
        "tokens_per_s_mean": pl.Float64,
        "tokens_per_s_sd": pl.Float64,
        "connect_mean_s": pl.Float64,
    }
    return pl.DataFrame(list(out.values()), schema=schema)


def _derived() -> list[pl.Expr]:
    wall = pl.when(pl.col("last_end") > pl.col("first_send")).then(pl.col("last_end") - pl.col("first_send"))
    has_slo = pl.col("slo_ttft_s").is_not_null() | pl.col("slo_tpot_s").is_not_null()
    limit = pl.col("client_lag_share_limit")
    share = pl.when(pl.col("latency_sum") > 0).then(pl.col("lag_sum") / pl.col("latency_sum"))
    ttft_p99, tpot_p99 = pl.col("ttft_p99_s"), pl.col("tpot_p99_s")
    return [
        wall.alias("wall_time_s"),
        (pl.col("ok_n") / wall * 60.0).alias("requests_per_min"),
        (pl.col("completion_total") / wall).alias("output_tokens_per_s"),
        pl.when(pl.col("prompt_n") > 0).then(pl.col("prompt_sum") / pl.col("prompt_n")).alias("prompt_tokens_mean"),
        pl.when(pl.col("completion_n") > 0)
        .then(pl.col("completion_sum") / pl.col("completion_n"))
        .alias("completion_tokens_mean"),
        share.alias("client_lag_share"),
        pl.when((pl.col("cached_n") > 0) & (pl.col("cached_of") > 0))
        .then(pl.col("cached_sum") / pl.col("cached_of"))
        .alias("cached_prompt_share"),
        pl.when(pl.col("ttft_sum") > 0)
        .then(pl.col("ttft_lag_sum") / pl.col("ttft_sum"))
        .alias("client_lag_ttft_share"),
        (limit.is_not_null() & (share > limit).fill_null(False)).alias("client_lag_flag"),
        pl.when(pl.col("rates") == 1).then(pl.col("rate")).alias("rate"),
        pl.when(has_slo & wall.is_not_null()).then(pl.col("met_slo") / wall).alias("goodput_rps"),
        pl.when(has_slo)
        .then(
            (pl.col("ok_n") == pl.col("n"))
            & ttft_p99.is_not_null()
            & (pl.col("slo_ttft_s").is_null() | (ttft_p99 <= pl.col("slo_ttft_s"))).fill_null(False)
            & (pl.col("slo_tpot_s").is_null() | tpot_p99.is_null() | (tpot_p99 <= pl.col("slo_tpot_s"))).fill_null(
                False
            )
        )
        .alias("slo_passed"),
    ]


def _empty_row() -> dict:
    return {"n": 0, "ok_n": 0, "concurrency": None, "workers": 0, "client_lag_flag": False}


def _summary(row: dict, engine: str, model: str, scenario: str, step_rate: float | None = None) -> ScenarioSummary:
    get = lambda name: row.get(name)  # noqa: E731  (absent: a scenario without records)
    return ScenarioSummary(
        engine=engine,
        model=model,
        scenario=scenario,
        concurrency=get("concurrency") if get("concurrency") is not None else 0,
        n=row["n"],
        errors=row["n"] - row["ok_n"],
        tokens_per_s_mean=get("tokens_per_s_mean"),
        tokens_per_s_sd=get("tokens_per_s_sd"),
        requests_per_min=get("requests_per_min"),
        output_tokens_per_s=get("output_tokens_per_s"),
        ttft_p50_s=get("ttft_p50_s"),
        ttft_p90_s=get("ttft_p90_s"),
        ttft_p99_s=get("ttft_p99_s"),
        tpot_p50_s=get("tpot_p50_s"),
        tpot_p90_s=get("tpot_p90_s"),
        tpot_p99_s=get("tpot_p99_s"),
        latency_p50_s=get("latency_p50_s"),
        latency_p90_s=get("latency_p90_s"),
        latency_p99_s=get("latency_p99_s"),
        prompt_tokens_mean=get("prompt_tokens_mean"),
        completion_tokens_mean=get("completion_tokens_mean"),
        wall_time_s=get("wall_time_s"),
        itl_p50_s=get("itl_p50_s"),
        itl_p90_s=get("itl_p90_s"),
        itl_p99_s=get("itl_p99_s"),
        dispatch_lag_p99_s=get("dispatch_lag_p99_s"),
        read_lag_p99_s=get("read_lag_p99_s"),
        connect_mean_s=get("connect_mean_s"),
        client_lag_share=get("client_lag_share"),
        client_lag_ttft_share=get("client_lag_ttft_share"),
        client_lag_share_limit=get("client_lag_share_limit"),
        client_lag_flag=bool(row["client_lag_flag"]),
        workers=row["workers"] or 1,
        chunk_tokens_counted_by=get("chunk_tokens_counted_by") or None,
        rate=get("rate"),
        slo_ttft_s=get("slo_ttft_s"),
        slo_tpot_s=get("slo_tpot_s"),
        goodput_rps=get("goodput_rps"),
        slo_passed=get("slo_passed"),
        cache=get("cache") or None,
        cached_prompt_share=get("cached_prompt_share"),
        step_rate=step_rate,
    )
