"""Read an engine's metrics endpoint around one scenario without disturbing the measurement.

- Before the first request and after the last, the bench job scrapes the endpoint itself: these two
  scrapes are outside the measured window. The after-scrape waits (a second or two at most) until the
  counters stop moving, as some engines count a request a moment after its last byte left.
- In between, a separate process (`python -m infbench.measure.scrape`) samples the gauges (running,
  waiting, KV usage) and the energy counters about once a second and appends them to a JSONL file:
  nothing runs in the client's event loop or its process. It parses only the gauges' lines.
- Every scrape has a timeout well under the request timeout; a missing, slow or garbage endpoint is
  recorded (the scenario's ServerMetrics says what was missing) and never fails the measurement.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from infbench.fileio import write_text_atomic
from infbench.measure.energy import EnergyMeter, meter_for
from infbench.measure.promtext import Samples, Unparseable
from infbench.measure.servermetrics import MetricMap, ServerMetrics, deltas, gauge_peaks
from infbench.procutil import die_with_parent

log = logging.getLogger("infbench.measure.scrape")

SCRAPE_TIMEOUT_S = 2.0  # a scrape's limit: well under any request timeout
SAMPLE_INTERVAL_S = 1.0
SETTLE_TRIES = 6  # after-scrape: until two in a row agree, at most this many
SETTLE_GAP_S = 0.25
SAMPLER_START_S = 15.0  # the sampler's start-up (an interpreter and its imports), before the window
AUTH_VARIABLE = "INFBENCH_SCRAPE_AUTHORIZATION"  # how an endpoint's key reaches the sampler process


@dataclass(frozen=True)
class Scrape:
    """One read of the endpoint: its text, or why there is none."""

    url: str
    at_mono: float
    text: str | None
    error: str | None
    took_s: float

    def samples(self) -> Samples:
        """Parsed; raises Unparseable for garbage."""
        if self.text is None:
            raise Unparseable(self.error or "no text")
        return Samples.parse(self.text)


def fetch(
    url: str, timeout_s: float = SCRAPE_TIMEOUT_S, headers: dict | None = None, client: httpx.Client | None = None
) -> Scrape:
    """GET the endpoint; never raises (an error is part of the result)."""
    started = time.monotonic()
    try:
        get = client.get if client else httpx.get
        extra = {} if client else {"trust_env": False}
        reply = get(url, timeout=timeout_s, headers=headers or {}, **extra)
    except httpx.TimeoutException:
        return Scrape(url, started, None, f"no answer within {timeout_s:g} s", time.monotonic() - started)
    except httpx.HTTPError as err:
        return Scrape(url, started, None, f"unreachable ({type(err).__name__})", time.monotonic() - started)
    took = time.monotonic() - started
    if reply.status_code != 200:
        return Scrape(url, started, None, f"answered HTTP {reply.status_code}", took)
    return Scrape(url, started, reply.text, None, took)


def settled_scrape(
    url: str, mapping: MetricMap, headers: dict | None = None, timeout_s: float = SCRAPE_TIMEOUT_S
) -> Scrape:
    """Scrape until the counters the reconciliation reads agree in two scrapes in a row (at most
    SETTLE_TRIES): an engine may count a request just after its stream ended."""
    last = fetch(url, timeout_s, headers)
    for _ in range(SETTLE_TRIES - 1):
        if last.text is None:
            return last
        time.sleep(SETTLE_GAP_S)
        again = fetch(url, timeout_s, headers)
        if again.text is None or _counter_values(again, mapping) == _counter_values(last, mapping):
            return again if again.text is not None else last
        last = again
    return last


def _counter_values(scrape: Scrape, mapping: MetricMap) -> dict | None:
    try:
        samples = scrape.samples()
    except Unparseable:
        return None
    return {name: samples.total(name) for names, _ in mapping.counters().values() for name in names}


def gauge_lines(text: str, names: list[str]) -> str:
    """Only the lines of these gauges (and their TYPE/HELP lines): parsing a whole vLLM scrape every
    second would cost the machine more than the gauges are worth."""
    keep = []
    for line in text.splitlines():
        body = line[7:] if line.startswith(("# TYPE ", "# HELP ")) else line
        if any(body.startswith(name) and body[len(name) : len(name) + 1] in (" ", "{") for name in names):
            keep.append(line)
    return "\n".join(keep) + "\n"


# --- the sampler process -----------------------------------------------------------------------------


def sample_loop(url: str, gauges: dict[str, str], out: Path, interval_s: float, meter: EnergyMeter) -> None:
    """Append one row per interval to `out` until SIGTERM: {"t": monotonic, "values": {role: v},
    "energy": {counter: raw}} or {"t": ..., "error": "..."}. Runs in its own process."""
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    names = list(gauges.values())
    auth = os.environ.pop(AUTH_VARIABLE, None)
    headers = {"Authorization": auth} if auth else {}
    with httpx.Client(trust_env=False, headers=headers) as client, out.open("a") as sink:
        print("ready", flush=True)
        next_at = time.monotonic()
        while not stop:
            row: dict = {"t": round(time.monotonic(), 6)}
            try:
                row["energy"] = meter.read() if not meter.unavailable else None
            except OSError as err:
                row["energy_error"] = str(err)
            scrape = fetch(url, min(SCRAPE_TIMEOUT_S, interval_s), client=client) if names else None
            if scrape is not None:
                row["took_s"] = round(scrape.took_s, 4)  # the server's time to answer: its share of the cost
            if scrape is None:
                pass  # no endpoint: energy only
            elif scrape.text is None:
                row["error"] = scrape.error
            else:
                try:
                    samples = Samples.parse(gauge_lines(scrape.text, names))
                    values = {role: samples.total(name) for role, name in gauges.items()}
                    if all(v is None for v in values.values()):
                        row["error"] = "none of the gauges in the scrape: " + ", ".join(names)
                    else:
                        row["values"] = values
                except Unparseable as err:
                    row["error"] = str(err)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sample an engine's gauges and energy counters until SIGTERM.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--gauge", action="append", default=[], help="ROLE=METRIC_NAME")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval-s", type=float, default=SAMPLE_INTERVAL_S)
    parser.add_argument("--gpu", action="append", default=[], help="a leased GPU id (NVML energy)")
    args = parser.parse_args(argv)
    gauges = dict(item.split("=", 1) for item in args.gauge)
    sample_loop(args.url, gauges, args.out, args.interval_s, meter_for(args.gpu))
    return 0


class Sampler:
    """The sampler process for one scenario: started before the first request (its start-up is outside
    the window), stopped after the last; its rows are read back afterwards."""

    def __init__(self, url: str | None, out: Path, gpu_ids: list[str], interval_s: float, headers: dict | None = None):
        self.url, self.out, self.gpu_ids, self.interval_s = url, out, gpu_ids, interval_s
        self.headers = headers or {}  # an external endpoint's key: to the child by environment, never argv
        self.process: subprocess.Popen | None = None
        self.error: str | None = None
        self.cpu_s: float | None = None

    def command(self, mapping: MetricMap | None) -> list[str]:
        gauges = [f"{role}={name}" for role, name in (mapping.gauges if mapping and self.url else {}).items()]
        return [
            sys.executable,
            "-m",
            "infbench.measure.scrape",
            "--url",
            self.url or "",
            "--out",
            str(self.out),
            "--interval-s",
            str(self.interval_s),
            *[arg for gauge in gauges for arg in ("--gauge", gauge)],
            *[arg for gpu in self.gpu_ids for arg in ("--gpu", gpu)],
        ]

    def start(self, mapping: MetricMap | None) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("")
        env = dict(os.environ, PYTHONPATH=_package_root())
        if "Authorization" in self.headers:
            env[AUTH_VARIABLE] = self.headers["Authorization"]
        try:
            self.process = subprocess.Popen(
                self.command(mapping), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                preexec_fn=die_with_parent,
            )  # fmt: skip
            ready = _read_line(self.process, SAMPLER_START_S)
        except OSError as err:
            ready, self.error = None, f"sampler not started: {err}"
        if ready != "ready":
            self.stop()
            self.error = self.error or f"sampler not ready within {SAMPLER_START_S:g} s"

    def stop(self) -> list[dict]:
        if self.process and self.process.poll() is None:
            try:  # what sampling cost the machine: the sampler's own CPU time, start-up included
                times = psutil.Process(self.process.pid).cpu_times()
                self.cpu_s = round(times.user + times.system, 3)
            except psutil.Error:
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SCRAPE_TIMEOUT_S + 2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.returncode not in (0, -signal.SIGTERM, None) and not self.error:
            err = self.process.stderr.read() if self.process.stderr else ""
            self.error = f"sampler exited with code {self.process.returncode}: {err.strip()[-300:]}"
        return read_samples(self.out)


def read_samples(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row cut short by the stop
            continue
    return rows


def _read_line(process: subprocess.Popen, timeout_s: float) -> str | None:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return None
    line = process.stdout.readline()
    return line.strip() if line else None


def _package_root() -> str:
    import infbench

    root = str(Path(infbench.__file__).resolve().parent.parent)
    extra = os.environ.get("PYTHONPATH")
    return root if not extra else f"{root}{os.pathsep}{extra}"


def recognise(scrape: Scrape, candidates: tuple[MetricMap, ...]) -> MetricMap | None:
    """The engine behind an external endpoint, from the metric names it exports."""
    try:
        samples = scrape.samples()
    except Unparseable:
        return None
    return next((m for m in candidates if all(samples.has(name) for name in m.generation_tokens)), None)


# --- one scenario --------------------------------------------------------------------------------------


class ScenarioWatch:
    """Around one scenario: begin() just before the first request, end() just after the last.

    Writes metrics/{scenario}.before.prom, .after.prom, .samples.jsonl and .json under `metrics_dir`.
    `url` None: the engine has no endpoint; only energy is measured then."""

    def __init__(
        self,
        engine: str,
        model: str,
        scenario: str,
        metrics_dir: Path,
        url: str | None,
        mapping: MetricMap | None,
        gpu_ids: list[str] = (),
        no_endpoint_reason: str | None = None,
        headers: dict | None = None,
        interval_s: float = SAMPLE_INTERVAL_S,
        meter: EnergyMeter | None = None,
        timeout_s: float = SCRAPE_TIMEOUT_S,
        candidates: tuple[MetricMap, ...] = (),
    ):
        self.timeout_s = timeout_s
        self.candidates = candidates  # mapping None: the first whose names the endpoint exports
        self.engine, self.model, self.scenario = engine, model, scenario
        self.dir = metrics_dir
        self.url, self.mapping, self.headers = url, mapping, headers
        self.no_endpoint_reason = no_endpoint_reason
        self.meter = meter if meter is not None else meter_for(list(gpu_ids))
        self.sampler = Sampler(url, metrics_dir / f"{scenario}.samples.jsonl", list(gpu_ids), interval_s, headers)
        self.before: Scrape | None = None
        self.energy_start: tuple[float, dict] | None = None

    def begin(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in ("before.prom", "after.prom", "json"):  # an earlier run's files never pass for this one's
            (self.dir / f"{self.scenario}.{old}").unlink(missing_ok=True)
        if self.url:
            self.before = fetch(self.url, self.timeout_s, self.headers)
            if self.before.text is not None:
                write_text_atomic(self.dir / f"{self.scenario}.before.prom", self.before.text)
                if self.mapping is None:
                    self.mapping = recognise(self.before, self.candidates)
        if (self.url and self.mapping and self.mapping.gauges) or not self.meter.unavailable:
            self.sampler.start(self.mapping)  # nothing to sample otherwise: no process at all
        self.energy_start = (time.monotonic(), self._read_energy())

    def wait_idle(self, timeout_s: float, poll_s: float = 0.25) -> float | None:
        """Poll the engine's running and waiting gauges until both read 0 (at most `timeout_s`): a
        step of a rate search must not start while the engine still serves the last step's requests
        (a request the client cut may run on in the server). Returns the seconds waited, or None when
        the engine cannot say (no endpoint, no such gauges, unreadable)."""
        gauges = [name for name in (self.mapping.running, self.mapping.waiting) if name] if self.mapping else []
        if not self.url or not gauges:
            return None
        started = time.monotonic()
        while True:
            scrape = fetch(self.url, self.timeout_s, self.headers)
            try:
                samples = scrape.samples()
            except Unparseable:
                return None
            if all(not samples.total(name) for name in gauges):
                return time.monotonic() - started
            if time.monotonic() - started >= timeout_s:
                log.warning(
                    "%s: the engine still had requests running or waiting %.0f s after the step before "
                    "ended (%s); the next step starts anyway",
                    self.scenario,
                    timeout_s,
                    ", ".join(f"{name} {samples.total(name):g}" for name in gauges),
                )
                return time.monotonic() - started
            time.sleep(poll_s)

    def end(self, output_tokens: int | None) -> ServerMetrics:
        """Call right after the last request ends; `output_tokens`: completion tokens of the
        scenario's successful requests (for joules per token)."""
        energy_end = (time.monotonic(), self._read_energy())
        rows = self.sampler.stop()
        after = None
        if self.url and self.mapping:
            after = settled_scrape(self.url, self.mapping, self.headers, self.timeout_s)
        if after is not None and after.text is not None:
            write_text_atomic(self.dir / f"{self.scenario}.after.prom", after.text)
        result = self._server_metrics(after, rows)
        result.sampler_cpu_s = self.sampler.cpu_s
        mid = [row["energy"] for row in rows if row.get("energy")]
        window = energy_end[0] - self.energy_start[0] if self.energy_start else 0.0
        readings = [self.energy_start[1], *mid, energy_end[1]] if self.energy_start else []
        readings = [r for r in readings if r is not None]
        result.energy = self.meter.result(readings, window).per_token(output_tokens).to_dict()
        result.write(self.dir / f"{self.scenario}.json")
        if result.status in ("missing", "invalid"):  # n/a (no endpoint) is said once, in details.md
            log.warning("%s: server metrics %s: %s", self.scenario, result.status, result.note)
        return result

    def _read_energy(self) -> dict | None:
        if self.meter.unavailable:
            return None
        try:
            return self.meter.read()
        except OSError:
            return None

    def _server_metrics(self, after: Scrape | None, rows: list[dict]) -> ServerMetrics:
        base = {"engine": self.engine, "model": self.model, "scenario": self.scenario}
        if not self.url:
            return ServerMetrics(**base, status="n/a", note=self.no_endpoint_reason or "n/a: no metrics endpoint")
        if self.mapping is None:
            known = ", ".join(m.engine for m in self.candidates) or "none"
            note = f"{self.url}: {self.before.error}" if self.before and self.before.error else None
            note = note or f"{self.url}: no known engine's metric names (known: {known})"
            return ServerMetrics(**base, url=self.url, status="missing", note=note)
        base.update(url=self.url, checked_on=self.mapping.checked_on, mapping_notes=list(self.mapping.notes))
        peaks = gauge_peaks(rows, self.mapping)
        scrapes = (("before", self.before), ("after", after))
        missing = [f"{name} scrape {s.error}" for name, s in scrapes if s and s.error]
        if missing:
            return ServerMetrics(**base, status="missing", note="; ".join(missing), gauges=peaks)
        try:
            first, last = self.before.samples(), after.samples()
        except Unparseable as err:
            return ServerMetrics(**base, status="missing", note=f"metrics endpoint: {err}", gauges=peaks)
        counters, histograms, reset = deltas(self.mapping, first, last)
        notes = [reset] if reset else []
        if self.sampler.error:
            notes.append(self.sampler.error)
        if peaks.failed_samples:
            notes.append(f"{peaks.failed_samples} of {peaks.failed_samples + peaks.samples} gauge samples failed")
        return ServerMetrics(
            **base,
            status="invalid" if reset else "ok",
            note="; ".join(notes) or None,
            window_s=round(after.at_mono - self.before.at_mono, 3),
            counters=counters,
            histograms=histograms,
            gauges=peaks,
        )


if __name__ == "__main__":
    sys.exit(main())
