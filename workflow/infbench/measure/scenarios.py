"""Scenario kinds, one class each, registered by kind: single, throughput, open_loop, sweep, and the
workloads users serve: conversation, shared_prefix, synthetic, trace, capacity.

A scenario owns what it sends (its requests), how (its load shape and runner) and where its summary
goes (which study table and plot, and whether it has steps). The bench job, the tables and the plots
ask the scenario's class; nothing else switches on the kind string.

`Scenario(name=..., kind=..., ...)` builds the registered class of that kind, so a spec file's
scenario (a dict with its kind) reads back as the right class. Defaults come from the schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from infbench import layout
from infbench.defaults import schema_default
from infbench.measure.capacity import CapacityPlan, CapacityStep, check_slo, run_capacity
from infbench.measure.client import ChatRequest, RequestSettings, RunContext
from infbench.measure.loadgen import (
    LoadShape,
    StepGate,
    StepLoad,
    StepWindow,
    SweepPlan,
    arrival_offsets,
    auto_workers,
    best_step,
    run_load,
    run_sweep,
)
from infbench.measure.prepared import (
    PreparedConversations,
    PreparedRequest,
    PreparedRequests,
    PreparedSizeError,
    PrepareInputs,
    fits_context,
    shared_prefix_requests,
    synthetic_requests,
    trace_requests,
)
from infbench.measure.records import RequestRecord
from infbench.measure.runners import ProgressCallback
from infbench.measure.trace import TraceError, TraceWindow, plan_replay, read_trace, scaled_block_tokens

log = logging.getLogger("infbench.measure.scenarios")

SCENARIO_KINDS: dict[str, type[Scenario]] = {}


def _default(key: str):
    return schema_default(f"scenarios.*.{key}")


def _register(cls: type[Scenario]) -> type[Scenario]:
    SCENARIO_KINDS[cls.__dataclass_fields__["kind"].default] = cls
    return cls


# Warm-up requests never send a measured prompt: a prompt sent before its measurement would be served
# from the engine's prefix cache. These share nothing with any prompt sample beyond the chat template.
WARMUP_SUBJECTS = (
    "the water cycle",
    "how a bicycle gear works",
    "why leaves change colour in autumn",
    "the rules of chess for a beginner",
)


def warmup_requests(count: int) -> list[ChatRequest]:
    """`count` warm-up requests (none of the sample's prompts); send them cold (RunContext.cache) so
    they leave nothing to reuse."""
    return [
        ChatRequest(
            request_id=f"warmup-{i:04d}",
            prompt_id=f"warmup-{i:04d}",
            messages=[
                {
                    "role": "user",
                    "content": f"Warm-up request {i}: in three short paragraphs, explain "
                    f"{WARMUP_SUBJECTS[i % len(WARMUP_SUBJECTS)]} to a curious twelve-year-old.",
                }
            ],
        )
        for i in range(count)
    ]


def scenario_class(kind: str) -> type[Scenario]:
    """The class registered for a kind; a clear error for an unknown one."""
    try:
        return SCENARIO_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown scenario kind {kind!r} (one of {', '.join(SCENARIO_KINDS)})") from None


@dataclass(frozen=True)
class RunHooks:
    """What the bench job asks to hear of while a scenario runs."""

    on_done: ProgressCallback | None = None  # after every request, with its record
    between_steps: StepGate | None = None  # a rate search, before each step but the first (loadgen.StepGate)


NO_HOOKS = RunHooks()


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # single | throughput (closed loop) | open_loop | sweep
    concurrency: int = _default("concurrency")
    requests: int | None = None  # a sweep: per step
    workers: int | str = _default("workers")  # client processes, or "auto"
    # cold: every request asks the engine not to serve it from a prefix an earlier request computed
    # (RequestSettings.cold_fields / cold_salt_field, the engine's own spelling); warm: as the engine does
    cache: str = "cold"  # the schema has no default: it depends on the kind (warm kinds redeclare it)

    loop: ClassVar[str] = "closed"  # closed: C streams back to back | open: sends at planned times
    # Where the summary goes (asked by the tables and the plots).
    in_speed_table: ClassVar[bool] = False  # inference_speed.md: tokens/s at concurrency 1
    in_throughput_table: ClassVar[bool] = False  # throughput.md: requests/min under a closed loop
    in_load_plot: ClassVar[bool] = False  # throughput.png: requests/min and tokens/s at a fixed load
    has_steps: ClassVar[bool] = False  # one summary row per step (a sweep's rates) besides the whole
    prepares: ClassVar[bool] = False  # its requests come from the prepare step (PreparedKind)
    section: ClassVar[str | None] = None  # its section of workloads.md (results/workloads.py), if any
    # Every request it sends is recorded (timed steps: those of each step's warm-up window are not),
    # so the server's counters can be reconciled with the records.
    records_every_send: ClassVar[bool] = True

    def __new__(cls, *args, **fields):
        if cls is Scenario:  # Scenario(kind=...) builds that kind's class
            cls = scenario_class(fields["kind"] if "kind" in fields else args[1])
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if SCENARIO_KINDS.get(self.kind) is not type(self):
            raise ValueError(f"scenario {self.name}: kind {self.kind!r} does not match {type(self).__name__}")

    @staticmethod
    def from_config(config: dict, name: str) -> Scenario:
        """The scenario `name` of a validated config (defaults filled from the schema)."""
        settings = config["scenarios"][name]
        return scenario_class(settings["kind"]).from_settings(name, settings, config["prompts"]["n"])

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        """Checks the schema cannot express, on a validated entry with defaults (and the whole validated
        config, for its models and sampling): ValueError "scenarios.NAME.KEY: why" (the config adds
        "config error at")."""

    @staticmethod
    def from_dict(data: dict) -> Scenario:
        """A spec file's scenario: its kind's class, from the keys that class has (a spec written by
        an older version may hold keys of other kinds, all at their defaults)."""
        cls = scenario_class(data["kind"])
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    @classmethod
    def from_settings(cls, name: str, settings: dict, sample_size: int) -> Scenario:
        concurrency = settings["concurrency"]
        requests = settings.get("requests") or max(2 * concurrency, sample_size)
        own = {
            key: settings[key]
            for key in cls.__dataclass_fields__
            if key in settings and key not in ("kind", "requests", "concurrency")
        }  # this kind's keys only
        return cls(name=name, concurrency=concurrency, requests=requests, **own)

    # --- what it sends ----------------------------------------------------------------------------

    def request_count(self, prompts) -> int:
        return self.requests

    def build_requests(self, prompts, step: int | None = None) -> list[ChatRequest]:
        """The sample cycled to the request count (a sweep: per step, with the step in the id)."""
        prefix = self.name if step is None else f"{self.name}-s{step:02d}"
        return [
            ChatRequest(
                request_id=f"{prefix}-{i:04d}",
                prompt_id=prompts[i % len(prompts)].id,
                messages=list(prompts[i % len(prompts)].messages),
            )
            for i in range(self.request_count(prompts))
        ]

    def _workers_for(self, streams: int) -> int:
        return auto_workers(streams) if self.workers == "auto" else int(self.workers)

    def load_shape(self, count: int) -> LoadShape:
        """How its requests are sent: a closed loop at its concurrency (open loops override)."""
        return LoadShape(kind="closed", concurrency=self.concurrency, workers=self._workers_for(self.concurrency))

    # --- how it runs ------------------------------------------------------------------------------

    def run_context(self, engine: str, model: str) -> RunContext:
        return RunContext(
            engine=engine, model=model, scenario=self.name, concurrency=self.concurrency, cache=self.cache
        )

    @property
    def load_label(self) -> str:
        return f"c={self.concurrency}"

    def progress_total(self, prompts) -> int | None:
        """Requests the progress bar counts to (None: not known ahead)."""
        return self.request_count(prompts)

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        requests = self.build_requests(prompts)
        return run_load(url, requests, settings, ctx, self.load_shape(len(requests)), on_done=hooks.on_done)

    # --- how it is summarized ---------------------------------------------------------------------

    @classmethod
    def steps(cls, records: list[RequestRecord]) -> list[tuple[float, list[RequestRecord]]]:
        """Its steps' records by step rate (only a kind with steps has any)."""
        return []


@_register
@dataclass(frozen=True)
class Single(Scenario):
    """Each prompt alone, one after the other: the study's inference speed (tokens/s)."""

    kind: str = "single"
    concurrency: int = 1
    in_speed_table: ClassVar[bool] = True

    @classmethod
    def from_settings(cls, name: str, settings: dict, sample_size: int) -> Scenario:
        return cls(name=name)  # every prompt once at concurrency 1, whatever else the entry says

    def request_count(self, prompts) -> int:
        return len(prompts)


@_register
@dataclass(frozen=True)
class Throughput(Scenario):
    """A closed loop: `concurrency` streams back to back (requests/min)."""

    kind: str = "throughput"
    in_throughput_table: ClassVar[bool] = True
    in_load_plot: ClassVar[bool] = True


class TimedSteps:
    """Keys and helpers of the kinds whose steps are sized by duration (open_loop, sweep, capacity)."""

    records_every_send: ClassVar[bool] = False  # a step's warm-up requests are sent, not recorded
    duration_s: float
    warmup_s: float
    saturation_margin: float
    min_requests: int

    def window(self) -> StepWindow:
        return StepWindow(self.duration_s, self.warmup_s, self.saturation_margin, min_requests=self.min_requests)

    def step_load(self, rate: int) -> StepLoad:
        """Its steps' window and arrivals, with client processes for `rate` requests/s."""
        return StepLoad(self.window(), self.arrival, self.burstiness, self.seed, self._workers_for(rate))

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        if "requests" in settings:
            raise ValueError(
                f"scenarios.{name}.requests: a {settings['kind']} step runs for duration_s "
                f"({settings['duration_s']:g} s), not a request count: remove requests"
            )
        if settings["duration_s"] <= settings["warmup_s"]:
            raise ValueError(
                f"scenarios.{name}.duration_s: {settings['duration_s']:g} s is not longer than its warmup_s "
                f"({settings['warmup_s']:g} s), whose requests are not counted"
            )

    def timed_requests(self, prompts, step: int | None = None) -> Callable[[int], list[ChatRequest]]:
        """A step's n requests: the sample cycled to n (ids carry the step)."""
        return lambda n: replace(self, requests=n).build_requests(prompts, step)


@_register
@dataclass(frozen=True)
class OpenLoop(TimedSteps, Scenario):
    """Sends at planned times drawn in advance (mean `rate`/s) for `duration_s`, whatever is in flight."""

    kind: str = "open_loop"
    rate: float | None = None  # requests/s
    arrival: str = _default("arrival")  # poisson | gamma | constant
    burstiness: float = _default("burstiness")  # gamma shape
    seed: int = _default("seed")
    duration_s: float = _default("duration_s")
    warmup_s: float = _default("warmup_s")
    saturation_margin: float = _default("saturation_margin")
    min_requests: int = _default("min_requests")
    loop: ClassVar[str] = "open"
    in_load_plot: ClassVar[bool] = True

    def load_shape(self, count: int) -> LoadShape:
        offsets = arrival_offsets(count, self.rate, self.arrival, self.burstiness, self.seed)
        return LoadShape(kind="open", offsets_s=tuple(offsets), workers=self._workers_for(int(self.rate)))

    def run_context(self, engine: str, model: str) -> RunContext:
        return replace(super().run_context(engine, model), rate=self.rate)

    @property
    def load_label(self) -> str:
        return f"rate={self.rate:g}/s for {self.duration_s:g} s"

    def progress_total(self, prompts) -> int | None:
        return None  # as many as the schedule draws within the duration

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        step = self.step_load(int(self.rate)).run(
            url, self.timed_requests(prompts), settings, ctx, self.rate, on_done=hooks.on_done
        )
        _log_saturation(self.name, step.rate, step.offered_rps, step.achieved_rps, step.saturated)
        return step.records


@_register
@dataclass(frozen=True)
class Sweep(TimedSteps, Scenario):
    """Open loops at rising rates, to the highest rate whose TTFT and TPOT p99 meet the SLOs."""

    kind: str = "sweep"
    arrival: str = _default("arrival")
    burstiness: float = _default("burstiness")
    seed: int = _default("seed")
    rates: list[float] = field(default_factory=list)  # explicit, else doubling from start_rate then bisection
    start_rate: float = _default("start_rate")
    max_rate: float = _default("max_rate")
    refine_steps: int = _default("refine_steps")
    slo_ttft_s: float | None = None  # on p99
    slo_tpot_s: float | None = None
    duration_s: float = _default("duration_s")
    warmup_s: float = _default("warmup_s")
    saturation_margin: float = _default("saturation_margin")
    min_requests: int = _default("min_requests")
    loop: ClassVar[str] = "open"
    has_steps: ClassVar[bool] = True

    @property
    def load_label(self) -> str:
        return "sweep"

    def progress_total(self, prompts) -> int | None:
        return None  # the number of steps is found as it goes

    def plan(self) -> SweepPlan:
        return SweepPlan(
            slo_ttft_s=self.slo_ttft_s,
            slo_tpot_s=self.slo_tpot_s,
            load=self.step_load(int(self.max_rate)),
            rates=tuple(self.rates),
            start_rate=self.start_rate,
            max_rate=self.max_rate,
            refine_steps=self.refine_steps,
        )

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        """Every step's records go to the scenario's file, each with its step's rate."""

        def on_step(step) -> None:
            log.info(
                "%s: %.3g requests/s: TTFT p99 %s ms, TPOT p99 %s ms, %d errors, goodput %s requests/s: %s",
                self.name,
                step.rate,
                _ms(step.ttft_p99_s),
                _ms(step.tpot_p99_s),
                step.errors,
                "n/a" if step.goodput_rps is None else f"{step.goodput_rps:.3g}",
                "pass" if step.passed else "FAIL",
            )
            _log_saturation(self.name, step.rate, None, step.achieved_rps, step.saturated)

        def make_requests(step: int, n: int) -> list[ChatRequest]:
            return self.timed_requests(prompts, step)(n)

        steps = run_sweep(
            url,
            make_requests,
            settings,
            ctx,
            self.plan(),
            on_done=hooks.on_done,
            on_step=on_step,
            between_steps=hooks.between_steps,
        )
        best = best_step(steps)
        log.info(
            "%s: highest rate that met the SLOs: %s", self.name, "none" if best is None else f"{best.rate:g} requests/s"
        )
        return [record for step in steps for record in step.records]

    @classmethod
    def steps(cls, records: list[RequestRecord]) -> list[tuple[float, list[RequestRecord]]]:
        rates = sorted({r.rate for r in records if r.rate is not None})
        return [(rate, [r for r in records if r.rate == rate]) for rate in rates]


# --- workloads users serve: prepared requests, conversations, traces, capacity ----------------------


class PreparedKind:
    """Kinds whose requests the prepare step builds (pipeline/requestprep.py, in the tools env) into
    results/requests/{model}/{name}.json; the bench job sets `requests_file` to it before running."""

    prepares: ClassVar[bool] = True
    needs_tokenizer: ClassVar[bool] = True  # its words come from the model's tokenizer
    reads_conversations: ClassVar[bool] = False  # the prepare step loads its conversation source
    roles: ClassVar[tuple[str, ...]] = ("user",)  # the chat roles of its messages (the template's count)
    fixed_lengths: ClassVar[bool] = False  # its requests carry their own output lengths, enforced

    name: str
    requests_file: str | None
    content: str
    seed: int

    def prepare(self, inputs: PrepareInputs) -> PreparedRequests | PreparedConversations:
        raise NotImplementedError

    def source_file(self) -> str | None:
        """The file its requests are built from (the prepare step's input), if any."""
        return None

    def load_prepared(self) -> PreparedRequests:
        if not self.requests_file:
            raise ValueError(f"scenario {self.name}: no prepared request file (the prepare step writes it)")
        return PreparedRequests.read(self.requests_file)

    def output_lengths(self) -> set[int]:
        """The output lengths its requests ask for (fixed-length kinds: the bench job gets each its fields)."""
        return self.load_prepared().output_lengths() if self.fixed_lengths else set()

    def _prepared(self, inputs: PrepareInputs, requests: list[PreparedRequest], notes=()) -> PreparedRequests:
        return PreparedRequests(
            scenario=self.name,
            kind=self.kind,
            model=inputs.model,
            tokenizer=inputs.tokenizer,
            template_tokens=inputs.template_tokens,
            words=inputs.words,
            content=self.content,
            seed=self.seed,
            requests=requests,
            notes=list(notes),
        )

    def _check_fits(self, key: str, prompt_tokens: int, output_tokens: int, inputs: PrepareInputs) -> None:
        if not fits_context(prompt_tokens, output_tokens, inputs.context_tokens):
            raise PreparedSizeError(
                f"scenarios.{self.name}.{key}: {prompt_tokens} prompt tokens (the chat template's "
                f"{inputs.template_tokens} included) + {output_tokens} output tokens do not fit model "
                f"{inputs.model}'s context of {inputs.context_tokens} tokens"
            )


def _check_context(name: str, key: str, tokens: int, config: dict, what: str) -> None:
    """`tokens` (before the chat template's own) must fit every model's context: ValueError naming the key."""
    for model, settings in config.get("models", {}).items():
        if tokens > settings["max_model_len"]:
            raise ValueError(
                f"scenarios.{name}.{key}: {what} ({tokens} tokens) does not fit model {model}'s context "
                f"(max_model_len {settings['max_model_len']})"
            )


@_register
@dataclass(frozen=True)
class MultiTurn(PreparedKind, Scenario):
    """Multi-turn chats: `concurrency` conversations at a time, each turn sent with the turns before
    it and the engine's own answers to them. Per-turn TTFT and tokens/s in workloads.md."""

    kind: str = "conversation"
    cache: str = "warm"  # reusing the prefix is what it measures (cache: cold salts every request)
    section: ClassVar[str | None] = "conversation"
    source: str = "builtin"  # builtin | jsonl:PATH | hf:DATASET[:SPLIT]
    conversations: int | None = None  # how many, sampled with seed (None: all)
    max_turns: int | None = None
    seed: int = _default("seed")
    content: str = "random"  # unused: its words are the source's
    requests_file: str | None = None
    needs_tokenizer: ClassVar[bool] = False
    reads_conversations: ClassVar[bool] = True
    in_load_plot: ClassVar[bool] = True

    def prepare(self, inputs: PrepareInputs) -> PreparedConversations:
        return PreparedConversations(self.name, self.source, list(inputs.conversations))

    def source_file(self) -> str | None:
        return self.source.removeprefix("jsonl:") if self.source.startswith("jsonl:") else None

    def _turns(self) -> list[list[ChatRequest]]:
        if not self.requests_file:
            raise ValueError(f"scenario {self.name}: no prepared conversation file (the prepare step writes it)")
        return PreparedConversations.read(self.requests_file).chat_turns(self.name)

    def progress_total(self, prompts) -> int | None:
        return sum(len(turns) for turns in self._turns())

    @property
    def load_label(self) -> str:
        return f"{self.concurrency} conversations at a time"

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        shape = LoadShape(
            kind="conversation", concurrency=self.concurrency, workers=self._workers_for(self.concurrency)
        )
        return run_load(url, self._turns(), settings, ctx, shape, on_done=hooks.on_done)


class _PreparedClosedLoop:
    """Prepared requests sent by a closed loop at `concurrency`."""

    def progress_total(self, prompts) -> int | None:
        return len(self.load_prepared().requests)

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        requests = self.load_prepared().chat_requests(self.name)
        return run_load(url, requests, settings, ctx, self.load_shape(len(requests)), on_done=hooks.on_done)


@_register
@dataclass(frozen=True)
class SharedPrefix(_PreparedClosedLoop, PreparedKind, Scenario):
    """G groups of P requests: each group's system message the same `system_tokens` tokens, each request
    its own `question_tokens`; a closed loop at `concurrency`, groups mixed (seeded)."""

    kind: str = "shared_prefix"
    cache: str = "warm"  # reusing the prefix is what it measures (cache: cold salts every request)
    section: ClassVar[str | None] = "shared_prefix"
    groups: int = _default("groups")
    prompts_per_group: int = _default("prompts_per_group")
    system_tokens: int = _default("system_tokens")
    question_tokens: int = _default("question_tokens")
    content: str = _default("content")
    seed: int = _default("seed")
    requests_file: str | None = None
    roles: ClassVar[tuple[str, ...]] = ("system", "user")
    in_load_plot: ClassVar[bool] = True

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        tokens = settings["system_tokens"] + settings["question_tokens"] + config["sampling"]["max_tokens"]
        _check_context(name, "system_tokens", tokens, config, "system_tokens + question_tokens + max_tokens")

    def prepare(self, inputs: PrepareInputs) -> PreparedRequests:
        prompt = inputs.template_tokens + self.system_tokens + self.question_tokens
        self._check_fits("system_tokens", prompt, inputs.max_tokens, inputs)
        requests = shared_prefix_requests(
            self.groups,
            self.prompts_per_group,
            self.system_tokens,
            self.question_tokens,
            inputs.template_tokens,
            self.seed,
        )
        return self._prepared(inputs, requests)

    @property
    def load_label(self) -> str:
        return f"{self.groups} groups x {self.prompts_per_group}, c={self.concurrency}"


@_register
@dataclass(frozen=True)
class Synthetic(_PreparedClosedLoop, PreparedKind, Scenario):
    """Requests of exactly I prompt tokens (the chat template's included) and O output tokens, for one
    (input_tokens, output_tokens) or several (sizes) pairs: `requests` of each, a closed loop at
    `concurrency` per pair, one pair after the other."""

    kind: str = "synthetic"
    section: ClassVar[str | None] = "synthetic"
    input_tokens: int | None = None
    output_tokens: int | None = None
    sizes: list[list[int]] = field(default_factory=list)  # [[I, O], ...]
    content: str = _default("content")
    seed: int = _default("seed")
    requests_file: str | None = None
    fixed_lengths: ClassVar[bool] = True
    in_load_plot: ClassVar[bool] = True

    def pairs(self) -> list[tuple[int, int]]:
        return [tuple(pair) for pair in self.sizes] or [(self.input_tokens, self.output_tokens)]

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        single = settings.get("input_tokens") is not None or settings.get("output_tokens") is not None
        if single == bool(settings.get("sizes")):
            raise ValueError(
                f"scenarios.{name}: give input_tokens and output_tokens, or sizes (a list of [input, output]), "
                f"not both and not neither"
            )
        if single and (settings.get("input_tokens") is None or settings.get("output_tokens") is None):
            missing = "input_tokens" if settings.get("input_tokens") is None else "output_tokens"
            raise ValueError(f"scenarios.{name}.{missing}: required with the other one")
        pairs = settings.get("sizes") or [[settings["input_tokens"], settings["output_tokens"]]]
        for index, (input_tokens, output_tokens) in enumerate(pairs):
            key = f"sizes[{index}]" if settings.get("sizes") else "input_tokens"
            _check_context(name, key, input_tokens + output_tokens, config, "input + output")

    def prepare(self, inputs: PrepareInputs) -> PreparedRequests:
        for index, (input_tokens, output_tokens) in enumerate(self.pairs()):
            self._check_fits(f"sizes[{index}]" if self.sizes else "input_tokens", input_tokens, output_tokens, inputs)
        key = f"scenarios.{self.name}.{'sizes' if self.sizes else 'input_tokens'}"
        return self._prepared(inputs, synthetic_requests(self.pairs(), self.requests, inputs.template_tokens, key))

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        """One closed loop per (I, O) pair, so each pair's figures are its own."""
        prepared = self.load_prepared()
        records = []
        for input_tokens, output_tokens in self.pairs():
            label = f"{input_tokens}x{output_tokens}"
            requests = prepared.chat_requests(self.name, [r for r in prepared.requests if r.label == label])
            records += run_load(url, requests, settings, ctx, self.load_shape(len(requests)), on_done=hooks.on_done)
        return records

    @property
    def load_label(self) -> str:
        return f"{', '.join(f'{i}/{o}' for i, o in self.pairs())} tokens, c={self.concurrency}"


@_register
@dataclass(frozen=True)
class Trace(PreparedKind, Scenario):
    """A Mooncake-format trace replayed at its timestamps (x time_scale), open loop, each request with
    its own output length; lengths and blocks shrunk together by length_scale (measure/trace.py)."""

    kind: str = "trace"
    cache: str = "warm"  # reusing the prefix is what it measures (cache: cold salts every request)
    section: ClassVar[str | None] = "trace"
    source: str = "seeded"  # seeded | jsonl:PATH
    window: dict = field(default_factory=dict)  # start | start_s, then count | duration_s
    time_scale: float = _default("time_scale")
    length_scale: float = _default("length_scale")
    content: str = _default("content")
    seed: int = _default("seed")
    requests_file: str | None = None
    fixed_lengths: ClassVar[bool] = True
    loop: ClassVar[str] = "open"
    in_load_plot: ClassVar[bool] = True

    @staticmethod
    def trace_path(source: str, seed: int) -> str:
        return layout.seeded_trace(seed) if source == "seeded" else source.removeprefix("jsonl:")

    def trace_window(self) -> TraceWindow:
        return TraceWindow(**self.window)

    def source_file(self) -> str | None:
        return self.trace_path(self.source, self.seed)

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        """A file trace is read and checked at start-up: a bad row, an empty window or a row that does
        not fit a model's context is named by file and line before anything runs."""
        try:
            window = TraceWindow(**settings.get("window", {}))
        except ValueError as err:
            raise ValueError(f"scenarios.{name}.window: {err}") from None
        if settings.get("source", "seeded") == "seeded":
            return  # the pipeline writes it (rule seeded_trace); it fits by construction of its scale
        path = cls.trace_path(settings["source"], settings["seed"])
        try:
            rows = window.select(read_trace(path))
        except TraceError as err:
            raise ValueError(f"scenarios.{name}.source: {err}") from None
        if not rows:
            raise ValueError(f"scenarios.{name}.window: selects no row of trace {path}")
        _check_rows_fit(name, path, plan_replay(rows, 1.0, settings["length_scale"]), config)

    def prepare(self, inputs: PrepareInputs) -> PreparedRequests:
        path = self.trace_path(self.source, self.seed)
        rows = self.trace_window().select(read_trace(path))
        if not rows:
            raise PreparedSizeError(f"scenarios.{self.name}.window: selects no row of trace {path}")
        planned = plan_replay(rows, self.time_scale, self.length_scale)
        for row in planned:
            if not fits_context(
                max(row.input_tokens, inputs.template_tokens + 1), row.output_tokens, inputs.context_tokens
            ):
                raise PreparedSizeError(
                    f"trace {path}, line {row.line}: {row.input_tokens} + {row.output_tokens} tokens (scaled by "
                    f"{self.length_scale:g}) do not fit model {inputs.model}'s context of {inputs.context_tokens} "
                    f"tokens: use a smaller scenarios.{self.name}.length_scale or a window without this row"
                )
        block = scaled_block_tokens(self.length_scale)
        requests, raised = trace_requests(planned, block, inputs.template_tokens, inputs.template_prefix_tokens)
        notes = [f"{len(requests)} rows of {path}, blocks of {block} tokens"]
        if raised:
            notes.append(f"{raised} rows shorter than the chat template's {inputs.template_tokens} tokens got one word")
        return self._prepared(inputs, requests, notes)

    def progress_total(self, prompts) -> int | None:
        return len(self.load_prepared().requests)

    @property
    def load_label(self) -> str:
        return f"trace x{self.time_scale:g} time, x{self.length_scale:g} length"

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        prepared = self.load_prepared()
        requests = prepared.chat_requests(self.name)
        offsets = tuple(r.at_s for r in prepared.requests)
        span = offsets[-1] - offsets[0] if len(offsets) > 1 else 0.0
        rate = (len(offsets) - 1) / span if span > 0 else 1.0
        shape = LoadShape(kind="open", offsets_s=offsets, workers=self._workers_for(max(1, int(rate))))
        return run_load(url, requests, settings, replace(ctx, rate=round(rate, 6)), shape, on_done=hooks.on_done)


def _check_rows_fit(name: str, path: str, planned, config: dict) -> None:
    for model, settings in config.get("models", {}).items():
        context = settings["max_model_len"]
        for row in planned:
            if row.input_tokens + row.output_tokens > context:
                raise ValueError(
                    f"scenarios.{name}.length_scale: trace {path}, line {row.line}: {row.input_tokens} + "
                    f"{row.output_tokens} tokens (scaled) do not fit model {model}'s context of {context} tokens; "
                    f"use a smaller length_scale or a window without this row"
                )


@_register
@dataclass(frozen=True)
class Capacity(TimedSteps, Scenario):
    """The highest request rate (open loop, the prompt sample cycled) at which the SLOs hold: the
    bracketing search over steps sized by time (measure/capacity.py). Its table: requests/min at the
    SLO, models x engines, with the rates that passed and failed and their figures (workloads.md)."""

    kind: str = "capacity"
    section: ClassVar[str | None] = "capacity"
    slo: dict = field(default_factory=dict)  # {figure: limit}, e.g. {"ttft_p90_s": 2, "error_rate": 0}
    start_rate: float = _default("start_rate")
    max_rate: float = _default("max_rate")
    min_rate: float = _default("min_rate")
    refine_steps: int = _default("refine_steps")
    precision: float = _default("precision")
    arrival: str = _default("arrival")
    burstiness: float = _default("burstiness")
    seed: int = _default("seed")
    duration_s: float = _default("duration_s")
    warmup_s: float = _default("warmup_s")
    saturation_margin: float = _default("saturation_margin")
    min_requests: int = _default("min_requests")
    loop: ClassVar[str] = "open"
    has_steps: ClassVar[bool] = True

    @classmethod
    def check_settings(cls, name: str, settings: dict, config: dict) -> None:
        super().check_settings(name, settings, config)
        check_slo(settings.get("slo") or {}, f"scenarios.{name}.slo")
        if not settings["min_rate"] <= settings["start_rate"] <= settings["max_rate"]:
            raise ValueError(
                f"scenarios.{name}.start_rate: needs min_rate <= start_rate <= max_rate, got "
                f"{settings['min_rate']:g}, {settings['start_rate']:g} and {settings['max_rate']:g}"
            )

    @property
    def load_label(self) -> str:
        return "capacity search"

    def progress_total(self, prompts) -> int | None:
        return None

    def plan(self) -> CapacityPlan:
        return CapacityPlan(
            slo=dict(self.slo),
            load=self.step_load(int(self.max_rate)),
            start_rate=self.start_rate,
            max_rate=self.max_rate,
            min_rate=self.min_rate,
            refine_steps=self.refine_steps,
            precision=self.precision,
        )

    def run(
        self, url: str, prompts, settings: RequestSettings, ctx: RunContext, hooks: RunHooks = NO_HOOKS
    ) -> list[RequestRecord]:
        def on_step(step: CapacityStep) -> None:
            figures = ", ".join(f"{key} {_figure(key, value)}" for key, value in step.measured.items())
            verdict = "pass" if step.passed else "FAIL (" + ", ".join(step.missed or ["saturated"]) + ")"
            log.info("%s: %.3g requests/s: %s: %s", self.name, step.rate, figures, verdict)
            _log_saturation(self.name, step.rate, step.offered_rps, step.achieved_rps, step.saturated)

        def make_requests(step: int, n: int) -> list[ChatRequest]:
            return self.timed_requests(prompts, step)(n)

        steps, bracket = run_capacity(
            url,
            make_requests,
            settings,
            ctx,
            self.plan(),
            on_done=hooks.on_done,
            on_step=on_step,
            between_steps=hooks.between_steps,
        )
        log.info(
            "%s: capacity at the SLO: %s (lowest failing rate: %s)",
            self.name,
            "none passed" if bracket.passed is None else f"{bracket.passed:g} requests/s",
            "none" if bracket.failed is None else f"{bracket.failed:g} requests/s",
        )
        return [record for step in steps for record in step.records]


def _figure(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if key == "error_rate" else f"{value * 1e3:.1f} ms"


def _log_saturation(name: str, rate: float, offered: float | None, achieved: float | None, saturated: bool) -> None:
    if saturated:
        log.warning(
            "%s: %.3g requests/s offered%s, %.3g completed per second: saturated (the server fell behind)",
            name,
            rate,
            "" if offered is None else f" ({offered:.3g} in the counted window)",
            achieved or 0.0,
        )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f}"
