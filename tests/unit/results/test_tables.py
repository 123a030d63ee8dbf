"""The merge: study-shaped tables from raw records, cells with their intervals, what is significantly
best in bold, skipped engines explained."""

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


def _run(tmp_path, fast_prompt_tokens=20, output_length="natural", speeds=((10, 30), (50, 50))):
    raw = tmp_path / "raw"
    plan = MergePlan(
        engines={"a": "Engine A", "b": "Engine B", "c": "Engine C"},
        models={"m1": "model-1"},
        scenarios={"single": "single", "throughput": "throughput"},
        native_engines=["c"],
    )
    for engine, tokens, prompt_tokens in (("a", speeds[0], 20), ("b", speeds[1], fast_prompt_tokens)):
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


def test_speed_table_is_models_by_engines_with_intervals_and_the_significantly_best_in_bold(tmp_path):
    speed = (_run(tmp_path, speeds=((10, 30) * 3, (50,) * 6)) / "inference_speed.md").read_text()
    assert "tokens/s" in speed
    assert "Model | Engine A | Engine B | Engine C" in speed
    # A: 10 and 30 tokens/s over six prompts, mean 20, t(5) interval 2.571 x 10.95 / sqrt(6) = 11.50.
    assert "model-1 | 20.00 ±11.50 | **50.00 ±0.00** | n/a: no docker engine" in speed
    assert "- model-1: Engine B best: significantly ahead of Engine A (paired t over 6 prompts, p=0.00" in speed
    assert "95% intervals: t over the prompts" in speed
    assert "- Engine A 1.0 (m1): `a serve`" in speed
    assert "Engine C (m1): not run, n/a: no docker engine" in speed


def test_two_prompts_give_no_interval_and_no_bold_and_say_so(tmp_path):
    speed = (_run(tmp_path) / "inference_speed.md").read_text()
    assert "model-1 | 20.00† | 50.00† | n/a: no docker engine" in speed
    assert "- model-1: no engine bold: Engine B against Engine A: 2 prompts: too few for an interval (at least 3)" in (
        speed
    )
    assert "- † 2 prompts: too few for an interval (at least 3): every cell" in speed


def test_throughput_table_in_requests_per_minute(tmp_path):
    throughput = (_run(tmp_path) / "throughput.md").read_text()
    # Two requests, sent at t=1000 and 1001, each 1 s long: 2 in 2 s = 60 requests/min.
    assert "requests/min" in throughput and "concurrency 2" in throughput
    # One repeat: no interval and no bold (a closed loop's unit is the repeat), and the notes say why.
    assert "model-1 | 60.00† | 60.00† | n/a: no docker engine" in throughput
    assert "t over the repeats (requests under load wait for each other" in throughput
    assert "- † 1 repeat: too few for an interval (at least 3): every cell" in throughput
    details = (tmp_path / "tables" / "details.md").read_text()
    assert "| tok/s 95% CI | req/min | req/min 95% CI |" in details
    assert "| n/a (2 prompts: too few for an interval (at least 3)) |" in details


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
