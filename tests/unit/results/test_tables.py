"""The merge: study-shaped tables from raw records, best value in bold, skipped engines explained."""

from __future__ import annotations

from infbench.fileio import write_json_atomic
from infbench.handoff import MergePlan
from infbench.measure.recordfiles import write_records
from infbench.measure.records import RequestRecord
from infbench.results.tables import merge


def _records(engine, scenario, speed_tokens, prompt_tokens=20, concurrency=1, output_length="natural", max_tokens=64):
    out = []
    for i, tokens in enumerate(speed_tokens):
        out.append(
            RequestRecord(
                request_id=f"{scenario}-{i:04d}",
                prompt_id=f"p{i}",
                engine=engine,
                model="m1",
                scenario=scenario,
                concurrency=concurrency,
                send_time=1000.0 + i,
                ttft_s=0.1,
                latency_s=1.0,
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
                status=200,
                output_length=output_length,
                max_tokens=max_tokens,
            )
        )
    return out


def _run(tmp_path, fast_prompt_tokens=20, output_length="natural"):
    raw = tmp_path / "raw"
    plan = MergePlan(
        engines={"a": "Engine A", "b": "Engine B", "c": "Engine C"},
        models={"m1": "model-1"},
        scenarios={"single": "single", "throughput": "throughput"},
        native_engines=["c"],
    )
    for engine, tokens, prompt_tokens in (("a", [10, 30], 20), ("b", [50, 50], fast_prompt_tokens)):
        write_records(
            raw / engine / "m1" / "single.jsonl",
            _records(engine, "single", tokens, prompt_tokens, output_length=output_length),
        )
        write_records(
            raw / engine / "m1" / "throughput.jsonl",
            _records(engine, "throughput", tokens, prompt_tokens, concurrency=2),
        )
        write_json_atomic(
            raw / engine / "m1" / "server.json", {"status": "ok", "version": "1.0", "command": [engine, "serve"]}
        )
    for name in ("single", "throughput", "native-single"):
        write_records(raw / "c" / "m1" / f"{name}.jsonl", [])
    write_json_atomic(raw / "c" / "m1" / "server.json", {"status": "skipped", "reason": "n/a: no docker engine"})
    merge(raw, tmp_path / "tables", plan)
    return tmp_path / "tables"


def test_speed_table_is_models_by_engines_with_best_in_bold(tmp_path):
    speed = (_run(tmp_path) / "inference_speed.md").read_text()
    assert "tokens/s" in speed
    assert "Model | Engine A | Engine B | Engine C" in speed
    assert "model-1 | 20.00 | **50.00** | n/a: no docker engine" in speed
    assert "- Engine A 1.0 (m1): `a serve`" in speed
    assert "Engine C (m1): not run, n/a: no docker engine" in speed


def test_throughput_table_in_requests_per_minute(tmp_path):
    throughput = (_run(tmp_path) / "throughput.md").read_text()
    # Two requests, sent at t=1000 and 1001, each 1 s long: 2 in 2 s = 60 requests/min.
    assert "requests/min" in throughput and "concurrency 2" in throughput
    assert "model-1 | **60.00** | **60.00** | n/a: no docker engine" in throughput  # a tie: both bold


def test_details_flag_prompt_token_mismatch_and_fixed_length(tmp_path):
    details = (_run(tmp_path, fast_prompt_tokens=25, output_length="fixed") / "details.md").read_text()
    assert "m1 / p0: prompt_tokens differ (a=20, b=25)" in details
    assert "WARNING: a/m1" in details  # 10 and 30 tokens where 64 were required
    csv = (tmp_path / "tables" / "summary.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 2 + 3  # header, a and b x 2 scenarios, c x (2 + native)


def test_same_prompt_tokens_says_so(tmp_path):
    details = (_run(tmp_path) / "details.md").read_text()
    assert "All engines counted the same prompt tokens" in details


def test_a_saturated_sweep_step_is_marked_and_never_the_best(tmp_path):
    """Both steps meet the SLOs on their percentiles, but the server fell behind at 8 req/s."""
    raw = tmp_path / "raw"
    records = []
    for rate, saturated in ((4.0, False), (8.0, True)):
        for r in _records("a", "sw", [10, 10, 10]):
            r.request_id, r.rate, r.saturated = f"{r.request_id}-{rate:g}", rate, saturated
            r.slo_ttft_s, r.slo_tpot_s = 5.0, 5.0
            records.append(r)
    write_records(raw / "a" / "m1" / "sw.jsonl", records)
    write_json_atomic(raw / "a" / "m1" / "server.json", {"status": "ok", "version": "1", "command": ["a"]})
    merge(raw, tmp_path / "tables", MergePlan(engines={"a": "A"}, models={"m1": "M"}, scenarios={"sw": "sweep"}))
    details = (tmp_path / "tables" / "details.md").read_text()
    row = next(line for line in details.split("## Sweeps")[1].splitlines() if line.startswith("a | m1 | sw |"))
    assert row.split(" | ")[5:7] == ["4, 8 (saturated)", "4.00"]
