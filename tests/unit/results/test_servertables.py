"""The merge with server metrics beside the records: marks, columns, details and the timeline plot."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
from fake_run import build_run, fake_config, fake_plan
from infbench.measure.records import read_records
from infbench.measure.servermetrics import GaugePeaks, ServerMetrics
from infbench.results.serverplots import TIMELINE_FILE, in_flight, plot_server_timeline
from infbench.results.servertables import MISMATCH_MARK
from infbench.results.tables import merge

TTFT = {"bounds": [0.05, 0.1, 0.25, "+Inf"], "cumulative": [0, 2, 3, 3], "count": 3, "sum": 0.3}


def _server(engine: str, scenario: str, records, extra_tokens: int = 0, **kw) -> ServerMetrics:
    ok = [r for r in records if r.ok]
    return ServerMetrics(
        engine=engine,
        model="tiny",
        scenario=scenario,
        status="ok",
        checked_on="test 1.0",
        counters={
            "generation_tokens": sum(r.completion_tokens for r in ok) + extra_tokens,
            "prompt_tokens": sum(r.prompt_tokens for r in ok),
            "requests_ok": len(ok),
            "preemptions": 2,
            "prefix_cache_queries": 100,
            "prefix_cache_hits": 25,
        },
        histograms={"ttft": TTFT},
        gauges=GaugePeaks(samples=4, running_max=2, waiting_max=1, kv_usage_max=0.125),
        energy={"method": "n/a", "reason": "no RAPL: /sys/class/powercap is absent"},
        **kw,
    )


def _run(tmp_path: Path) -> tuple[Path, Path]:
    build_run(tmp_path)
    raw = tmp_path / "results" / "raw"
    for engine in ("alpha", "beta"):
        for scenario in ("single", "throughput"):
            records = read_records(raw / engine / "tiny" / f"{scenario}.jsonl")
            # beta's throughput: the server generated one token more than the client was told
            extra = 1 if (engine, scenario) == ("beta", "throughput") else 0
            _server(engine, scenario, records, extra).write(raw / engine / "tiny" / "metrics" / f"{scenario}.json")
    return raw, tmp_path / "results" / "tables"


def test_a_mismatch_is_marked_in_the_main_table_and_named_in_details(tmp_path):
    raw, tables = _run(tmp_path)
    merge(raw, tables, fake_plan(fake_config()))
    throughput = (tables / "throughput.md").read_text()
    beta_row = next(line for line in throughput.splitlines() if line.startswith("Tiny |"))
    assert beta_row.count(MISMATCH_MARK) == 1  # beta only; alpha's counts matched
    assert f"WARNING ({MISMATCH_MARK}): beta/tiny/throughput" in throughput
    assert "completion tokens: client (usage) 27, server 28" in throughput
    assert MISMATCH_MARK not in (tables / "inference_speed.md").read_text()
    details = (tables / "details.md").read_text()
    assert "## What the server saw" in details
    assert "completion tokens: client (usage) 27, server 28" in details
    assert "alpha | tiny | single | 3 / 3 | n/a / 21 / 21 | 63 / 63 | match" in details
    assert "interpolated within its buckets" in details
    # TTFT means: the client's exact mean beside the server's (the histogram's sum over its count)
    assert "alpha | tiny | single | 110.0 / 100.0 / +10.0 |" in details
    assert "n/a: no RAPL: /sys/class/powercap is absent" in details


def test_summary_csv_gets_the_server_columns(tmp_path):
    raw, tables = _run(tmp_path)
    merge(raw, tables, fake_plan(fake_config()))
    summary = pl.read_csv(tables / "summary.csv")
    row = summary.filter((pl.col("engine") == "alpha") & (pl.col("scenario") == "single")).row(0, named=True)
    assert row["reconcile"] == "match" and row["server_metrics"] == "ok"
    assert math.isclose(row["server_ttft_p50_s"], 0.05 + 0.05 * (1.5 - 0) / 2)  # rank 1.5 of 2 in (0.05, 0.1]
    assert row["prefix_cache_hit_rate"] == 0.25 and row["peak_kv_usage"] == 0.125 and row["preemptions"] == 2
    assert row["energy_j"] is None and row["energy_method"].startswith("n/a: no RAPL")
    beta = summary.filter((pl.col("engine") == "beta") & (pl.col("scenario") == "throughput"))
    assert beta["reconcile"].item() == "MISMATCH"


def test_without_server_metrics_the_tables_are_as_before(tmp_path):
    build_run(tmp_path)
    tables = tmp_path / "results" / "tables"
    merge(tmp_path / "results" / "raw", tables, fake_plan(fake_config()))
    assert "server_metrics" not in pl.read_csv(tables / "summary.csv").columns
    assert "What the server saw" not in (tables / "details.md").read_text()


def test_no_endpoint_is_said_once_per_engine(tmp_path):
    raw, tables = _run(tmp_path)
    for scenario in ("single", "throughput"):
        ServerMetrics("alpha", "tiny", scenario, status="n/a", note="n/a: no metrics endpoint").write(
            raw / "alpha" / "tiny" / "metrics" / f"{scenario}.json"
        )
    merge(raw, tables, fake_plan(fake_config()))
    details = (tables / "details.md").read_text()
    assert details.count("n/a: no metrics endpoint") == 1


def test_in_flight_steps_from_the_records():
    records = [
        {"send_mono": 10.0, "latency_s": 2.0},
        {"send_mono": 10.5, "latency_s": 1.0},
        {"send_mono": 13.0, "latency_s": None, "response_end_s": 0.5},
    ]
    times, counts = in_flight(records)
    assert list(zip(times, counts, strict=True)) == [(10.0, 1), (10.5, 2), (11.5, 1), (12.0, 0), (13.0, 1), (13.5, 0)]


def test_timeline_plot_with_and_without_samples(tmp_path):
    raw, _ = _run(tmp_path)
    out = tmp_path / TIMELINE_FILE
    plot_server_timeline(raw, ["alpha"], ["tiny"], ["single"], out)
    empty = out.read_bytes()
    assert empty.startswith(b"\x89PNG")
    samples = raw / "alpha" / "tiny" / "metrics" / "single.samples.jsonl"
    samples.write_text(
        '{"t": 1800000000.2, "values": {"running": 1, "waiting": 0, "kv_usage": 0.1}}\n'
        '{"t": 1800000001.2, "error": "no answer within 1 s"}\n'
        '{"t": 1800000002.2, "values": {"running": 0, "waiting": 0, "kv_usage": 0.0}}\n'
    )
    plot_server_timeline(raw, ["alpha"], ["tiny"], ["single"], out)
    assert out.read_bytes().startswith(b"\x89PNG") and out.read_bytes() != empty
