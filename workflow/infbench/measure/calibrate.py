"""`infbench calibrate`: our client against the reference server, measured figures against true ones.

The truth is the reference server's log of what it really did (parse time, every chunk's send time),
run through the same metric definitions as the client's records. Per concurrency the report says
which of three things limited the run:

- client: its own lag (dispatch or read, p99) passed the limit: its figures carry its own delay;
- server: the reference server sent late against its schedule: the load was not what was asked for;
- CPU: the machine was busy (other processes included): the rig, not the client, is saturated.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

import psutil

from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import LoadShape, auto_workers, run_load
from infbench.measure.metrics import ScenarioSummary, percentile, summarize
from infbench.measure.records import RequestRecord
from infbench.measure.refserver import RefServerProcess, RefSettings

# Against a reference server with known timing, the client's own lag (dispatch or read, p99) and the
# server's are judged in absolute terms: more than this is a rig that cannot time the engine.
LAG_LIMIT_S = 0.001
CPU_SATURATED = 0.90  # machine busy fraction from which the rig counts as saturated


def true_records(log: dict, scenario: str = "truth", concurrency: int = 0) -> list[RequestRecord]:
    """The server's log as records timed from its parse of each request: what an ideal client sees."""
    out = []
    for entry in log["requests"]:
        parsed = entry["parsed"]
        done = entry["end"] is not None and not entry["aborted"]
        record = RequestRecord(
            request_id=entry["id"],
            prompt_id="",
            engine="refserver",
            model="refserver",
            scenario=scenario,
            concurrency=concurrency,
            send_time=parsed,
            send_mono=parsed,
            status=200,
            error=None if done else "aborted",
            chunk_times_s=[t - parsed for t in entry["chunk_times"]],
            chunk_tokens=list(entry["chunk_tokens"]),
            completion_tokens=entry["tokens"],
            chunk_tokens_counted_by="server",
        )
        if done and entry["chunk_times"]:
            record.ttft_s = entry["chunk_times"][0] - parsed
            record.latency_s = entry["end"] - parsed
        out.append(record)
    return out


@dataclass
class CpuWindow:
    """CPU use over one run: the whole machine, our client (with its workers) and the server."""

    wall_s: float
    machine_busy: float  # fraction of all cores
    client_cores: float  # cores' worth used by the client process and its worker processes
    server_cores: float
    load_avg_1m: float

    @property
    def others_cores(self) -> float:
        return max(self.machine_busy * (os.cpu_count() or 1) - self.client_cores - self.server_cores, 0.0)


class CpuMeter:
    def __init__(self, server_cpu_s: float) -> None:
        self.t = time.monotonic()
        self.machine = psutil.cpu_times()
        self.own = self._own()
        self.server = server_cpu_s

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self, server_cpu_s: float) -> CpuWindow:
        wall = time.monotonic() - self.t
        after = psutil.cpu_times()
        total = sum(after) - sum(self.machine)
        idle = (after.idle - self.machine.idle) + (getattr(after, "iowait", 0) - getattr(self.machine, "iowait", 0))
        # Worker processes are reaped within the run, so RUSAGE_CHILDREN holds them; the server (reaped
        # only at the very end) reports its own CPU time in its log.
        client = self._own() - self.own
        return CpuWindow(
            wall_s=wall,
            machine_busy=1 - idle / total if total > 0 else 0.0,
            client_cores=client / wall,
            server_cores=(server_cpu_s - self.server) / wall,
            load_avg_1m=os.getloadavg()[0],
        )


@dataclass
class Comparison:
    concurrency: int
    requests: int
    workers: int
    measured: ScenarioSummary
    true: ScenarioSummary
    true_tokens_per_s: float | None  # server log: tokens / (last end - first parse)
    ideal_tokens_per_s: float | None  # the settings' own figure with C streams always busy
    server_lag_p99_s: float | None
    split: dict[str, tuple[float | None, float | None]]  # TTFT parts: name -> (p50, p99) seconds
    cpu: CpuWindow
    lag_limit_s: float
    unmatched: int = 0  # client records with no server log entry

    @property
    def tokens_per_s_error(self) -> float | None:
        return _rel(self.measured.output_tokens_per_s, self.true_tokens_per_s)

    def verdict(self) -> str:
        parts = []
        if self.measured.errors:
            parts.append(f"{self.measured.errors} errors")
        lags = (self.measured.dispatch_lag_p99_s, self.measured.read_lag_p99_s)
        if any(lag is not None and lag > self.lag_limit_s for lag in lags):
            parts.append("client lag")
        if self.server_lag_p99_s is not None and self.server_lag_p99_s > self.lag_limit_s:
            parts.append("rig saturated: server late")
        if self.cpu.machine_busy >= CPU_SATURATED:
            parts.append(
                f"rig saturated: CPU {self.cpu.machine_busy:.0%} busy, other processes "
                f"{self.cpu.others_cores:.1f} of {os.cpu_count()} cores"
            )
        return "; ".join(parts) or "ok"


def _rel(measured: float | None, true: float | None) -> float | None:
    if measured is None or not true:
        return None
    return measured / true - 1.0


def ttft_split(records: list[RequestRecord], log: dict) -> tuple[dict[str, tuple[float | None, float | None]], int]:
    """Each request's TTFT (from its planned send) cut at the times both sides logged on one clock:
    dispatch (late start), connect, upload (request written to server parsed), server (parse to first
    chunk sent), delivery (first chunk sent to read by the client: network and read lag)."""
    by_id = {entry["id"]: entry for entry in log["requests"]}
    parts: dict[str, list[float]] = {k: [] for k in ("dispatch", "connect", "upload", "server", "delivery", "total")}
    unmatched = 0
    for r in records:
        entry = by_id.get(r.request_id)
        if entry is None or not r.ok or r.ttft_s is None or not entry["chunk_times"] or r.send_mono is None:
            unmatched += entry is None
            continue
        dispatch, connect = r.dispatch_lag_s or 0.0, r.connect_s or 0.0
        written = r.send_mono + dispatch + connect
        first_read = r.send_mono + r.ttft_s
        parts["dispatch"].append(dispatch)
        parts["connect"].append(connect)
        parts["upload"].append(entry["parsed"] - written)
        parts["server"].append(entry["chunk_times"][0] - entry["parsed"])
        parts["delivery"].append(first_read - entry["chunk_times"][0])
        parts["total"].append(r.ttft_s)
    return {k: (percentile(v, 50), percentile(v, 99)) for k, v in parts.items()}, unmatched


def true_throughput(log: dict) -> float | None:
    entries = [e for e in log["requests"] if e["end"] is not None and not e["aborted"]]
    if not entries:
        return None
    span = max(e["end"] for e in entries) - min(e["parsed"] for e in entries)
    return sum(e["tokens"] for e in entries) / span if span > 0 else None


def ideal_throughput(settings: RefSettings, concurrency: int, tokens: int) -> float:
    per_request = settings.ttft_s + (tokens - 1) * settings.itl_s
    return concurrency * tokens / per_request if per_request > 0 else float("inf")


def compare(
    records: list[RequestRecord],
    log: dict,
    settings: RefSettings,
    concurrency: int,
    workers: int,
    cpu: CpuWindow,
    lag_limit_s: float,
    tokens: int,
) -> Comparison:
    truth = true_records(log, concurrency=concurrency)
    lags = [lag for entry in log["requests"] for lag in entry["chunk_lags"]]
    split, unmatched = ttft_split(records, log)
    return Comparison(
        concurrency=concurrency,
        requests=len(records),
        workers=workers,
        measured=summarize(records, "infbench", "refserver", f"c{concurrency}"),
        true=summarize(truth, "refserver", "refserver", f"c{concurrency}"),
        true_tokens_per_s=true_throughput(log),
        ideal_tokens_per_s=ideal_throughput(settings, concurrency, tokens),
        server_lag_p99_s=percentile(lags, 99),
        split=split,
        cpu=cpu,
        lag_limit_s=lag_limit_s,
        unmatched=unmatched,
    )


def requests_for(prefix: str, n: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            request_id=f"{prefix}-{i:05d}",
            prompt_id="calibration",
            messages=[{"role": "user", "content": "Count to one hundred."}],
        )
        for i in range(n)
    ]


def run_ours(
    server: RefServerProcess,
    concurrency: int,
    n: int,
    tokens: int,
    workers: int | str = 1,
    lag_limit_s: float = LAG_LIMIT_S,
    continuous_usage: bool = False,
) -> Comparison:
    """One closed-loop run of our client at `concurrency` against a running reference server."""
    before = server.fetch_log(clear=True)  # forget earlier runs; its cpu_s is our baseline
    n_workers = auto_workers(concurrency) if workers == "auto" else int(workers)
    settings = RequestSettings(
        model_name="refserver",
        max_tokens=tokens,
        continuous_usage=continuous_usage,
        timeout_s=120,
    )
    ctx = RunContext(engine="infbench", model="refserver", scenario=f"c{concurrency}", concurrency=concurrency)
    meter = CpuMeter(before["cpu_s"])
    records = run_load(
        server.chat_url,
        requests_for(f"ours-c{concurrency}", n),
        settings,
        ctx,
        LoadShape(kind="closed", concurrency=concurrency, workers=n_workers),
    )
    log = server.fetch_log(clear=True)
    cpu = meter.stop(log["cpu_s"])
    return compare(records, log, server.settings, concurrency, n_workers, cpu, lag_limit_s, tokens)


def _ms(seconds: float | None, digits: int = 2) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.{digits}f}"


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction * 100:+.2f}%"


def format_report(rows: list[Comparison], settings: RefSettings) -> str:
    """Markdown: measured against true per concurrency, then the TTFT split and the rig's state."""
    lines = [
        f"Reference server: TTFT {settings.ttft_s * 1e3:g} ms, ITL {settings.itl_s * 1e3:g} ms, "
        f"{settings.tokens} tokens, {settings.tokens_per_chunk} token(s) per chunk, role chunk "
        f"{'on' if settings.role_chunk else 'off'}, usage {'on' if settings.usage else 'off'}"
        f"{', continuous usage' if settings.continuous_usage else ''}. "
        "True = the server's own log (same metric code). Clock: CLOCK_MONOTONIC, shared by all processes.",
        "",
        "C | n | procs | out tok/s measured | true | error | ideal | TTFT p50 ms meas/true | TTFT p99 ms meas/true "
        "| TPOT p50 ms meas/true | ITL p50 ms meas/true | ITL p99 ms meas/true | verdict",
        " | ".join(["---"] * 13),
    ]
    for c in rows:
        m, t = c.measured, c.true
        lines.append(
            " | ".join(
                [
                    str(c.concurrency),
                    str(c.requests),
                    str(c.workers),
                    _f(m.output_tokens_per_s),
                    _f(c.true_tokens_per_s),
                    _pct(c.tokens_per_s_error),
                    _f(c.ideal_tokens_per_s),
                    f"{_ms(m.ttft_p50_s)} / {_ms(t.ttft_p50_s)}",
                    f"{_ms(m.ttft_p99_s)} / {_ms(t.ttft_p99_s)}",
                    f"{_ms(m.tpot_p50_s, 3)} / {_ms(t.tpot_p50_s, 3)}",
                    f"{_ms(m.itl_p50_s, 3)} / {_ms(t.itl_p50_s, 3)}",
                    f"{_ms(m.itl_p99_s, 3)} / {_ms(t.itl_p99_s, 3)}",
                    c.verdict(),
                ]
            )
        )
    lines += [
        "",
        "TTFT split, p50 / p99 ms (dispatch: late start; connect: new TCP connection; upload: written to parsed; "
        "server: parsed to first chunk sent; delivery: sent to read by the client)",
        "",
        "C | dispatch | connect | upload | server | delivery | TTFT | client read lag p99 | server lag p99 "
        "| CPU busy | client cores | server cores | other cores | load 1m",
        " | ".join(["---"] * 14),
    ]
    for c in rows:
        s = c.split
        lines.append(
            " | ".join(
                [
                    str(c.concurrency),
                    *(
                        f"{_ms(s[k][0])} / {_ms(s[k][1])}"
                        for k in ("dispatch", "connect", "upload", "server", "delivery", "total")
                    ),
                    _ms(c.measured.read_lag_p99_s),
                    _ms(c.server_lag_p99_s),
                    f"{c.cpu.machine_busy:.0%}",
                    f"{c.cpu.client_cores:.2f}",
                    f"{c.cpu.server_cores:.2f}",
                    f"{c.cpu.others_cores:.2f}",
                    f"{c.cpu.load_avg_1m:.2f}",
                ]
            )
        )
    for c in rows:
        if c.unmatched:
            lines.append(
                f"- C={c.concurrency}: {c.unmatched} request(s) missing from the server's log (not in the split)"
            )
    limit_ms = _ms(rows[0].lag_limit_s if rows else LAG_LIMIT_S)
    lines += [
        "",
        f"Verdicts: client lag = the client's dispatch or read lag p99 passed {limit_ms} ms; "
        "rig saturated = the reference server sent late (its lag p99 over the same limit) or the machine's "
        f"CPUs were {CPU_SATURATED:.0%}+ busy: then the rig, not the client, limits the run.",
    ]
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def calibrate(
    concurrencies: list[int],
    settings: RefSettings,
    requests_per_stream: int = 8,
    min_requests: int = 16,
    workers: int | str = 1,
    lag_limit_s: float = LAG_LIMIT_S,
    progress=print,
) -> list[Comparison]:
    rows = []
    with RefServerProcess(settings) as server:
        for concurrency in concurrencies:
            n = max(min_requests, requests_per_stream * concurrency)
            progress(f"calibrate: C={concurrency}, {n} requests ...")
            rows.append(
                run_ours(
                    server,
                    concurrency,
                    n,
                    settings.tokens,
                    workers,
                    lag_limit_s,
                    continuous_usage=settings.continuous_usage,
                )
            )
    return rows
