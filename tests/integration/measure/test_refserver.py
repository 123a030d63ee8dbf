"""The reference server: its timing against its own log, its chunk shapes, and the truth derived from it.

Timing is checked against the server's own log and causality on the one clock both sides share,
never against wall-clock expectations that a loaded machine could break.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from infbench.measure.calibrate import true_records, ttft_split
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.eventloop import run_measured
from infbench.measure.metrics import inter_token_latencies, summarize
from infbench.measure.refserver import RefServerProcess, RefSettings
from infbench.measure.runners import run_closed_loop

CTX = RunContext(engine="e", model="m", scenario="ref", concurrency=1)


def _requests(n: int, prefix: str = "ref") -> list[ChatRequest]:
    return [ChatRequest(f"{prefix}-{i:03d}", "p", [{"role": "user", "content": "count"}]) for i in range(n)]


def _run(server: RefServerProcess, n: int = 3, concurrency: int = 1, max_tokens: int = 1000, **settings):
    ctx = RunContext(engine="e", model="m", scenario="ref", concurrency=concurrency)
    records = run_measured(
        run_closed_loop(server.chat_url, _requests(n), RequestSettings("any-model", max_tokens, **settings), ctx)
    )
    return records, server.fetch_log(clear=True)


def test_chunks_follow_the_schedule_in_the_servers_own_log():
    settings = RefSettings(ttft_s=0.03, itl_s=0.01, tokens=12)
    with RefServerProcess(settings) as server:
        records, log = _run(server, n=4, concurrency=2)
    assert [r.ok for r in records] == [True] * 4, [r.error for r in records]
    assert len(log["requests"]) == 4
    for entry in log["requests"]:
        assert entry["tokens"] == 12 and entry["chunk_tokens"] == [1] * 12 and not entry["aborted"]
        for i, (sent, lag) in enumerate(zip(entry["chunk_times"], entry["chunk_lags"], strict=True)):
            scheduled = entry["parsed"] + 0.03 + i * 0.01
            assert lag == pytest.approx(sent - scheduled, abs=1e-9)  # the lag it reports is the lag it had
            assert lag >= 0  # never early
        assert entry["chunk_times"] == sorted(entry["chunk_times"]) and entry["end"] >= entry["chunk_times"][-1]
    # Most chunks leave on time; a loaded machine may delay some, which the log then shows.
    lags = sorted(lag for e in log["requests"] for lag in e["chunk_lags"])
    assert lags[len(lags) // 2] < 0.005


def test_client_and_server_share_one_clock_and_causality_holds():
    with RefServerProcess(RefSettings(ttft_s=0.02, itl_s=0.005, tokens=8)) as server:
        records, log = _run(server, n=3)
    by_id = {e["id"]: e for e in log["requests"]}
    for r in records:
        entry = by_id[r.request_id]  # the client's X-Request-Id reached the log
        written = r.send_mono + r.dispatch_lag_s + r.connect_s
        assert written <= entry["parsed"]  # sent before the server parsed it ...
        assert r.send_mono + r.ttft_s >= entry["chunk_times"][0]  # ... and read after the server sent it
        assert r.send_mono + r.latency_s >= entry["end"]
        assert r.completion_tokens == 8 and r.finish_reason == "stop"
    split, unmatched = ttft_split(records, log)
    assert unmatched == 0
    assert split["server"][0] >= 0.02 and split["upload"][0] >= 0 and split["delivery"][0] >= 0


def test_truth_from_the_log_uses_the_same_metric_code():
    with RefServerProcess(RefSettings(ttft_s=0.02, itl_s=0.01, tokens=5)) as server:
        _, log = _run(server, n=2)
    truth = summarize(true_records(log), "ref", "ref", "truth")
    assert truth.n == 2 and truth.errors == 0
    assert truth.ttft_p50_s >= 0.02 and truth.completion_tokens_mean == 5
    # TPOT from the log is the scheduled 10 ms plus whatever lag the server logged.
    first = log["requests"][0]
    expected = (first["end"] - first["chunk_times"][0]) / 4
    assert summarize(true_records({"requests": [first]}), "r", "r", "t").tpot_p50_s == pytest.approx(expected)


def test_max_tokens_caps_the_response_and_finish_reason_says_length():
    with RefServerProcess(RefSettings(ttft_s=0.0, itl_s=0.001, tokens=50)) as server:
        records, log = _run(server, n=1, max_tokens=7)
    assert records[0].completion_tokens == 7 and records[0].finish_reason == "length"
    assert log["requests"][0]["tokens"] == 7


def test_role_chunk_is_not_a_token_and_usage_can_be_left_out():
    settings = RefSettings(ttft_s=0.02, itl_s=0.002, tokens=5, role_chunk=True, usage=False)
    with RefServerProcess(settings) as server:
        records, log = _run(server, n=1)
    r, entry = records[0], log["requests"][0]
    assert r.ok and r.completion_tokens == 5 and r.tokens_counted_by == "chunks"
    assert r.send_mono + r.ttft_s >= entry["chunk_times"][0]  # TTFT waits for content, not the role chunk


def test_multi_token_chunks_with_continuous_usage_give_per_token_itl():
    settings = RefSettings(ttft_s=0.01, itl_s=0.004, tokens=10, tokens_per_chunk=4)
    with RefServerProcess(settings) as server:
        records, log = _run(server, n=1, continuous_usage=True)
    r, entry = records[0], log["requests"][0]
    assert entry["chunk_tokens"] == [4, 4, 2]
    assert r.chunk_tokens == [4, 4, 2] and r.chunk_tokens_counted_by == "usage" and r.completion_tokens == 10
    itls = inter_token_latencies(r)
    assert len(itls) == 6  # the first chunk's 4 tokens are in TTFT
    # Per token, not per chunk: each value is a chunk gap divided by that chunk's tokens.
    gaps = [b - a for a, b in zip(r.chunk_times_s, r.chunk_times_s[1:], strict=False)]
    assert itls == pytest.approx([gaps[0] / 4] * 4 + [gaps[1] / 2] * 2)
    # The second chunk was due 4 ITLs after the first: per token that is one ITL, not four.
    assert entry["chunk_times"][1] >= entry["parsed"] + 0.01 + 7 * 0.004
    assert itls[0] < (r.chunk_times_s[1] - r.chunk_times_s[0]) / 2


def test_side_endpoints_and_unknown_routes():
    with RefServerProcess(RefSettings(model="ref-model")) as server:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{server.base_url}/health") as response:
            assert json.loads(response.read()) == {"status": "ok"}
        with opener.open(f"{server.base_url}/v1/models") as response:
            assert json.loads(response.read())["data"][0]["id"] == "ref-model"
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"{server.base_url}/nope")
        assert err.value.code == 404
        log = server.fetch_log()
        assert log["clock"].startswith("time.monotonic") and log["requests"] == []
