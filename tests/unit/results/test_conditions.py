"""The conditions stated in the tables (results/conditions.py): cache state and cached prompt tokens,
completion lengths across engines, and percentiles only where the sample supports them."""

from __future__ import annotations

import csv
import io

import polars as pl
import pytest
from infbench.handoff import MergePlan
from infbench.measure.recordfiles import write_records
from infbench.measure.records import RequestRecord
from infbench.results.conditions import mask_unsupported, percentile_cell, percentile_needs
from infbench.results.tables import merge


def _records(engine: str, scenario: str, n: int, cache: str, cached: int | None, completion: int) -> list:
    return [
        RequestRecord(
            request_id=f"{scenario}-{i:04d}",
            prompt_id=f"p{i % 4}",
            engine=engine,
            model="m",
            scenario=scenario,
            concurrency=1 if scenario == "single" else 2,
            send_time=100.0 + 2 * i,
            ttft_s=0.1 + 0.001 * i,
            latency_s=1.0 + 0.01 * i,
            chunk_times_s=[0.1 + 0.9 * k / completion for k in range(completion)],
            chunk_tokens=[1] * completion,
            prompt_tokens=100,
            completion_tokens=completion,
            cached_prompt_tokens=cached,
            cache=cache,
            status=200,
        )
        for i in range(n)
    ]


def _merge(tmp_path, runs: dict[tuple[str, str], list]) -> dict[str, str]:
    raw = tmp_path / "raw"
    for (engine, scenario), records in runs.items():
        (raw / engine / "m").mkdir(parents=True, exist_ok=True)
        write_records(raw / engine / "m" / f"{scenario}.jsonl", records)
    engines = sorted({engine for engine, _ in runs})
    plan = MergePlan(
        engines={e: e.upper() for e in engines},
        models={"m": "M"},
        scenarios={"single": "single", "throughput": "throughput"},
    )
    merge(raw, tmp_path / "tables", plan)
    return {p.name: p.read_text() for p in (tmp_path / "tables").iterdir()}


def _row(table: str, model_label: str = "M") -> str:
    return next(line for line in table.splitlines() if line.startswith(f"{model_label} |"))


def test_percentiles_need_a_tail_beyond_them():
    assert [percentile_needs(q) for q in (50, 90, 99, 99.9)] == [2, 10, 100, 1000]
    row = {"n": 16, "errors": 0}
    assert percentile_cell(row, "ttft_p99_s", "12.0") == "n/a (n=16)"
    assert percentile_cell(row, "ttft_p90_s", "11.0") == "11.0"
    assert percentile_cell({"n": 120, "errors": 30}, "latency_p99_s", "1.2") == "n/a (n=90)"
    assert percentile_cell(row, "itl_p99_s", "5.0") == "5.0"  # ITL counts tokens, not requests
    frame = pl.DataFrame({"n": [16, 150], "errors": [0, 0], "ttft_p99_s": [1.0, 2.0], "ttft_p50_s": [0.5, 0.6]})
    masked = mask_unsupported(frame)
    assert masked["ttft_p99_s"].to_list() == [None, 2.0] and masked["ttft_p50_s"].to_list() == [0.5, 0.6]


def test_a_cold_scenario_served_from_a_cache_is_marked_and_the_share_shown(tmp_path):
    """alpha said it served 25% of a cold scenario's prompt tokens from its cache: marked ‡, the share
    under the table and in details.md and summary.csv; beta (0 cached) is not marked."""
    tables = _merge(
        tmp_path,
        {
            ("alpha", "single"): _records("alpha", "single", 4, "cold", 25, 20),
            ("beta", "single"): _records("beta", "single", 4, "cold", 0, 20),
            ("alpha", "throughput"): _records("alpha", "throughput", 4, "warm", 60, 20),
            ("beta", "throughput"): _records("beta", "throughput", 4, "warm", None, 20),
        },
    )
    speed, throughput = tables["inference_speed.md"], tables["throughput.md"]
    alpha, beta = (cell.strip() for cell in _row(speed).split("|")[1:3])
    assert alpha.endswith("‡") and not beta.endswith("‡")
    assert "scenario single, 4 prompts, cold cache" in speed
    assert "alpha/m/single was declared cold, but the engine served 25.0% of its prompt tokens" in speed
    assert "concurrency 2, warm cache" in throughput and "‡" not in _row(throughput)  # warm may hit
    details = tables["details.md"]
    assert "| cached prompt % |" in details
    shares = {
        (row["engine"], row["scenario"]): row["cached_prompt_share"]
        for row in csv.DictReader(io.StringIO(tables["summary.csv"]))
    }
    assert shares[("alpha", "single")] == "0.25" and shares[("beta", "single")] == "0.0"
    assert shares[("beta", "throughput")] == ""  # the engine did not say: not 0


def test_natural_lengths_that_differ_are_said_under_the_table_and_per_prompt(tmp_path):
    tables = _merge(
        tmp_path,
        {
            ("alpha", "single"): _records("alpha", "single", 4, "cold", 0, 20),
            ("beta", "single"): _records("beta", "single", 4, "cold", 0, 30),
            ("alpha", "throughput"): _records("alpha", "throughput", 4, "cold", 0, 20),
            ("beta", "throughput"): _records("beta", "throughput", 4, "cold", 0, 21),
        },
    )
    assert (
        "- NOTE: m/single: mean completion lengths differ by 50% (alpha 20.0, beta 30.0 tokens"
        in (tables["inference_speed.md"])
    )
    assert "NOTE" not in tables["throughput.md"]  # 5% apart: under the 10% limit
    assert "## Completion tokens across engines" in tables["details.md"]
    assert "- m: 4 of 4 prompts got completions of different lengths:" in tables["details.md"]


@pytest.mark.parametrize("n", [16, 100])
def test_details_and_csv_show_p99_only_from_100_requests(tmp_path, n):
    tables = _merge(
        tmp_path,
        {
            ("alpha", "single"): _records("alpha", "single", n, "cold", 0, 10),
            ("alpha", "throughput"): _records("alpha", "throughput", 4, "cold", 0, 10),
        },
    )
    line = next(line for line in tables["details.md"].splitlines() if line.startswith("alpha | m | single"))
    row = next(csv.DictReader(io.StringIO(tables["summary.csv"])))
    if n < 100:
        assert f"n/a (n={n})" in line and row["ttft_p99_s"] == "" and row["ttft_p90_s"] != ""
    else:
        assert "n/a (n=" not in line and float(row["ttft_p99_s"]) > 0


def test_cold_on_an_engine_that_cannot_keep_it_cold_is_marked_with_the_reason(tmp_path):
    """transformers with continuous batching (no switch for its block sharing): its cold cell is marked
    though it reports no cached tokens, and the line under the table says why."""
    import json

    tables_dir = tmp_path
    runs = {
        ("alpha", "single"): _records("alpha", "single", 4, "cold", None, 20),
        ("alpha", "throughput"): _records("alpha", "throughput", 4, "warm", None, 20),
    }
    raw = tables_dir / "raw"
    for (engine, scenario), records in runs.items():
        (raw / engine / "m").mkdir(parents=True, exist_ok=True)
        write_records(raw / engine / "m" / f"{scenario}.jsonl", records)
    reason = "transformers serve --continuous-batching shares KV blocks between requests and has no switch"
    server = {"engine": "alpha", "model": "m", "status": "ok", "cache": {"not_assured": reason}}
    (raw / "alpha" / "m" / "server.json").write_text(json.dumps(server))
    plan = MergePlan(
        engines={"alpha": "A"}, models={"m": "M"}, scenarios={"single": "single", "throughput": "throughput"}
    )
    merge(raw, tmp_path / "tables", plan)
    speed = (tmp_path / "tables" / "inference_speed.md").read_text()
    throughput = (tmp_path / "tables" / "throughput.md").read_text()
    assert _row(speed).endswith("‡") and f"alpha/m/single was declared cold, but cold is not assured: {reason}" in speed
    assert not _row(throughput).endswith("‡")  # warm: nothing to assure
