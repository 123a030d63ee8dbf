"""Typed records that one pipeline step writes and another reads, validated when read.

- ServerInfo: results/raw/{engine}/{model}/server.json, written by the bench job (how the server ran,
  or why it was skipped), read by the merge, the plots and the provenance.
- MergePlan: results/tables/merge_plan.json (and the merge rule's --plan), from the config: what to
  merge; read by the merge, the plots and `infbench verify`.
- MemoryReport: results/raw/{engine}/{model}/memory.json, the memory the server used (measure.memwatch
  samples it), read by the memory table and `infbench verify`.
- GgufMeta: results/models/{model}.gguf.json, the GGUF the gguf rule wrote (or why it could not),
  read by the llama.cpp engine.
- FailureMarker: results/failures/{engine}/{model}.json, left by a bench job that failed (the bench
  rule takes it as an input, so the next run repeats the job).
- ModelMeta: results/models/{model}.json, the prepared model (models rule), read by the provenance
  and the memory estimate.
- PromptsMeta: results/prompts/{name}.meta.json, the prompt sample (prompts rule), read by the provenance.
- Bandwidth: results/hardware/bandwidth.json, this machine's memory bandwidth (memory_bandwidth rule),
  read by the decode bound, the provenance and the memory estimate.
- MemoryEstimate: results/memory/{model}.json, read by the memory table, the bounds and verify.

Adding a field is one line in the dataclass (with a default, so older files still read). Readers
ignore keys they do not know, so a file written by a newer step still reads.
"""

from __future__ import annotations

import json
import time
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from infbench import layout
from infbench.defaults import schema_default
from infbench.fileio import write_text_atomic
from infbench.layout import NATIVE_RUN

R = TypeVar("R", bound="HandoffRecord")


class HandoffError(ValueError):
    """A step's record is missing a field or holds a value of the wrong type; names file and field."""


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, HandoffRecord)


def _check(value: Any, hint: Any) -> bool:
    """Whether value fits a simple type hint (str, int, float, bool, list[...], dict[...], X | None,
    a nested record as its JSON object)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_check(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if _is_record(hint):
        return isinstance(value, (dict, hint))
    base = origin or hint
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base) if isinstance(base, type) else True


def _nested(value: Any, hint: Any, where: str) -> Any:
    """A nested record (alone, optional, or in a list) read from its JSON object; anything else as is."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        records = [arg for arg in typing.get_args(hint) if _is_record(arg)]
        return records[0].from_dict(value, where) if records and isinstance(value, dict) else value
    if _is_record(hint) and isinstance(value, dict):
        return hint.from_dict(value, where)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        if _is_record(item):
            return [item.from_dict(v, f"{where}[{i}]") if isinstance(v, dict) else v for i, v in enumerate(value)]
    return value


class HandoffRecord:
    """Mixin for a dataclass written by one step and read by another."""

    # The file's keys sorted (most records), or in the fields' order (the memory estimate, whose
    # field order is the order a reader of the file meets them in).
    SORT_KEYS: ClassVar[bool] = True

    @classmethod
    def from_dict(cls: type[R], data: Any, source: str = "") -> R:
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise HandoffError(f"{where}{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise HandoffError(f"{where}{cls.__name__}: missing field {f.name!r}")
                continue
            if not _check(data[f.name], hints[f.name]):
                raise HandoffError(
                    f"{where}{cls.__name__}: field {f.name!r} should be {hints[f.name]}, got {data[f.name]!r}"
                )
            values[f.name] = _nested(data[f.name], hints[f.name], f"{where}{cls.__name__}.{f.name}")
        return cls(**values)  # unknown keys: ignored (a newer writer may add fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            raise HandoffError(f"{path}: not valid JSON: {err}") from None
        return cls.from_dict(data, str(path))

    def to_json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=self.SORT_KEYS)

    def write(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json_text() + "\n")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class ServerInfo(HandoffRecord):
    """server.json: how one engine's server ran for one model (or why it did not). Every field has a
    default, so a partial file (a hand-written skip, an older run) still reads; types are checked."""

    engine: str = ""
    kind: str = ""
    label: str = ""
    model: str = ""
    device: str = ""
    gpu_ids: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # the exact command line
    version: str | None = None
    startup_s: float | None = None
    status: str = "ok"  # ok | skipped | failed (reason says why)
    reason: str | None = None
    sampling: dict = field(default_factory=dict)
    fixed_length_control: str | None = None
    notes: list[str] = field(default_factory=list)
    finished_at: str = field(default_factory=now_iso)
    # The bench job's pass: 1, or K >= 2 for results/raw/E/M/repeat-K (scenarios.NAME.repeats); when
    # it started (finished_at is when it ended): the provenance lists the jobs in this order.
    repeat: int = 1
    started_at: str | None = None
    weights: str = "real"  # real | random (seeded random weights: output length forced to fixed)
    # The settings that matter for speed (threads, binding, batching, KV cache, graphs), listed
    # under the tables; the environment variables the adapter set for the engine's best setup.
    settings: dict = field(default_factory=dict)
    server_env: dict = field(default_factory=dict)
    external: bool = False  # an endpoint already running (openai base_url): not started here
    base_url: str | None = None
    # Where the bench job ran: hostname, slurm_job_id, slurm_node, slurm_partition (engines.gpus.this_node)
    node: dict = field(default_factory=dict)
    # Per scenario: what other processes used meanwhile (measure.busy.MachineLoad.to_dict())
    machine_load: dict = field(default_factory=dict)
    # How the server and its requests kept the scenarios' cache states (engines.cache.CachePlan.to_dict())
    cache: dict = field(default_factory=dict)


@dataclass
class GpuMemory(HandoffRecord):
    index: int
    name: str
    total_bytes: int
    used_idle_bytes: int = 0
    used_peak_bytes: int = 0
    pci_device_id: int | None = None  # NVML's PCI device id (without the vendor), for the decode bound


@dataclass
class MemoryReport(HandoffRecord):
    """memory.json: what one engine's server used for one model (or why it was not measured)."""

    engine: str
    model: str
    device: str
    kind: str = ""  # engine kind: picks the estimate's runtime term
    status: str = "ok"  # ok | skipped | failed (reason says why)
    reason: str | None = None
    kv_cache_bytes: int | None = None  # a KV pool the engine preallocates, when known
    samples: int = 0
    interval_s: float = schema_default("bench.memory_sample_interval_s")
    rss_idle_bytes: int = 0
    rss_peak_bytes: int = 0
    gpus: list[GpuMemory] = field(default_factory=list)
    # What the engine itself logged at start-up (vLLM: weights, KV pool and tokens, max concurrency;
    # memory.vllmlog.VllmStartup), for the memory table's KV capacity check.
    engine_reported: dict | None = None
    # An external endpoint's memory bandwidth, when its config gives it (bytes/s): its decode bound.
    bandwidth_bytes_s: float | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> MemoryReport:
        report = super().from_dict(data, source)
        report.gpus = [
            g if isinstance(g, GpuMemory) else GpuMemory.from_dict(g, f"{source} gpus[{i}]")
            for i, g in enumerate(report.gpus)
        ]
        return report


@dataclass(frozen=True)
class MergePlan(HandoffRecord):
    """What to merge, from the config: names, labels, and each scenario's kind (results/routing.py
    says, from the kind, which table and plot a scenario goes to)."""

    engines: dict[str, str]  # name -> column label
    models: dict[str, str]  # name -> row label
    scenarios: dict[str, str]  # name -> kind (single | throughput | open_loop | sweep)
    # Engines with an extra run over their native route (TGI): + native-single.jsonl (layout.NATIVE_RUN).
    native_engines: list[str] = field(default_factory=list)
    # Scenarios run in more than one pass (scenarios.NAME.repeats): name -> passes. Only these passes
    # are merged, so a pass left on disk by an earlier config with more repeats never counts.
    repeats: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> MergePlan:
        return cls.from_dict(json.loads(text), "merge plan")

    def to_json(self) -> str:
        return json.dumps(self.to_dict())  # no sort_keys: the config's engine order is the tables' column order

    def runs(self, engine: str) -> list[str]:
        """The record files merged for an engine: every scenario, then its extra runs."""
        return [*self.scenarios, *([NATIVE_RUN] if engine in self.native_engines else [])]

    def passes(self, run: str) -> int:
        """How many passes of a scenario (or an extra run: always one) the merge reads."""
        return self.repeats.get(run, 1)

    def all_runs(self) -> list[str]:
        """Every run name of any engine, scenarios first."""
        return [*self.scenarios, *([NATIVE_RUN] if self.native_engines else [])]


@dataclass(frozen=True)
class FailureMarker(HandoffRecord):
    """results/failures/E/M.json (E/M/repeat-K.json for pass K): this bench job failed, and why."""

    reason: str
    at: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class ModelMeta(HandoffRecord):
    """results/models/M.json: the model the models rule prepared. The memory estimate needs only its
    path (a file written by hand for `infbench memory-estimate --model-meta` may hold no more)."""

    name: str
    path: str  # the HF-format directory (resources/models/M)
    source: str = ""
    dtype: str = ""  # as prepared on disk; engines may cast it at load ("": not said)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    size_bytes: int = 0


@dataclass(frozen=True)
class PromptsMeta(HandoffRecord):
    """results/prompts/NAME.meta.json: the prompt sample the prompts rule wrote."""

    source: str
    n: int  # asked for
    seed: int
    count: int  # drawn (fewer when the source holds fewer)
    sha256: str  # of the sample file's bytes


@dataclass(frozen=True)
class Bandwidth(HandoffRecord):
    """results/hardware/bandwidth.json: this machine's memory bandwidth (jobs/bandwidth.py measures
    it). Only the figure is required, so a file of an older writer (or written by hand) reads."""

    bandwidth_bytes_s: float  # what the bound uses: the higher of the two methods
    bound_method: str = ""  # read | triad ("": an older file, read benchmark only)
    why: str = ""
    read: dict[str, Any] = field(default_factory=dict)  # memory.bandwidth.BandwidthMeasurement
    triad: dict[str, Any] = field(default_factory=dict)  # memory.triad.TriadMeasurement
    load_1min: float | None = None  # os.getloadavg() before the benchmarks
    quiet: bool | None = None  # nobody else used the machine beyond the busy limits meanwhile
    machine_load: dict[str, Any] = field(default_factory=dict)  # measure.busy.MachineLoad while measuring
    cpu: str = ""
    threads: int = 0
    measured_at: float = 0.0


@dataclass(frozen=True)
class GgufMeta(HandoffRecord):
    model: str
    status: str  # ok | unsupported
    reason: str | None
    path: str | None
    file_type: str | None  # F32 | F16 | BF16: what llama.cpp serves
    source_dtype: str | None  # the prepared weights' dtype it was written from
    tokenizer: str | None  # gguf tokenizer model: gpt2 (BPE) | llama (SentencePiece-style)
    tokenizer_pre: str | None
    sha256: str | None
    size_bytes: int | None


def gguf_meta_path(model_name: str) -> Path:
    """Where the gguf rule records a model's GGUF (the llama.cpp adapter reads it)."""
    return Path(layout.MODELS) / f"{model_name}.gguf.json"


def read_gguf_meta(model_name: str) -> GgufMeta | None:
    path = gguf_meta_path(model_name)
    return GgufMeta.read(path) if path.exists() else None


# --- results/memory/{model}.json: the memory estimate. memory.records.Estimate.to_record() builds it
# and the memory_estimate rule writes it; the memory table, the decode bound and verify read it. Every
# field has a default, so an older or partial file still reads (what is absent gives no figure).


@dataclass
class EstimateParameters(HandoffRecord):
    total: int = 0
    source: str = ""
    tied_embeddings: bool = True  # tied: the output layer is the embedding, read whole per token
    by_role: dict = field(default_factory=dict)  # role -> parameters (embedding, attention, ...)
    checkpoint_bytes: int | None = None


@dataclass
class EstimateKvCache(HandoffRecord):
    attention: str = ""
    layers: int = 0
    attention_heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    layer_kinds: Any = None
    sliding_windows: Any = None  # the sliding-window layers' windows, when the model has any
    bytes_per_token: dict = field(default_factory=dict)  # kv dtype -> bytes
    bytes_per_sequence: int = 0  # one sequence of `context` tokens at kv_dtype
    notes: list = field(default_factory=list)


@dataclass(frozen=True)
class EstimateOverhead(HandoffRecord):
    """A memory term beside the weights and the KV cache (memory.records.Overhead)."""

    name: str
    bytes: int
    assumption: str = ""


@dataclass(frozen=True)
class EstimateGpuFit(HandoffRecord):
    """One GPU type at one tensor-parallel size, as vLLM would lay it out (memory.records.GpuFit;
    memory/fit.py builds it). Only the GPU is required: older files lack later figures."""

    gpu: str
    gpu_memory_bytes: int = 0  # CUDA-reported total, per GPU
    tp: int = 1
    fits: bool = False
    reason: str = ""
    budget_bytes: int = 0  # u * memory, per GPU
    weights_bytes: int = 0  # per GPU, as vLLM holds them
    activation_bytes: int = 0  # per GPU
    runtime_bytes: int = 0  # per GPU: non-torch memory charged inside the budget
    cuda_context_bytes: int = 0  # per GPU, outside the budget
    kv_pool_bytes: int = 0  # per GPU, what is left for the KV cache (may be < 0)
    kv_tokens: int = 0  # tokens the pool holds (vLLM's "GPU KV cache size")
    max_sequences: int = 0  # concurrent sequences of `context` tokens, capped at max_num_seqs
    kv_concurrency: float = 0.0  # vLLM's "Maximum concurrency" (pool / one sequence), uncapped
    max_num_seqs: int = 0
    batched_tokens: int = 0
    activation_from: str = ""
    bandwidth_bytes_s: float | None = None  # per GPU, published
    decode_bytes_per_token: int = 0  # per GPU: weights + KV of `context` tokens
    decode_bound_tokens_s: float | None = None  # single request at `context` tokens
    graphs_in_budget_bytes: int = 0  # CUDA-graph estimate charged inside the budget (vLLM >= 0.21)
    cuda_graphs_bytes: int = 0  # per GPU, inside or outside the budget (0 with --enforce-eager)
    all_reduce: str = ""  # "none" (TP=1), "custom" (vLLM's kernel) or "nccl"
    kv_groups: int = 1  # KV-cache block groups (sliding-window/hybrid models: more than one)

    @property
    def setup(self) -> str:
        return f"{self.tp}x {self.gpu}"


@dataclass
class EstimateVllm(HandoffRecord):
    version: str = ""
    accounting: str = ""  # the start-up accounting of that version (memory.vllm)
    graphs_in_budget: bool = False
    sampler: str = ""
    max_num_seqs: int | None = None  # None: each GPU's server default
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    disable_custom_all_reduce: bool = False
    expert_parallel: str = ""
    gpu_memory_utilization: float | None = None  # None: the memory table's default
    context: int = 0
    batch: int = 1
    gpus: list[EstimateGpuFit] = field(default_factory=list)
    smallest: dict | None = None  # {gpu, tp, setup} of the smallest setup that fits, or None


@dataclass
class EstimateSpeedBound(HandoffRecord):
    what: str = ""
    cpu: dict | None = None  # memory.records.SpeedBound of this machine's CPU, when its bandwidth is known


@dataclass
class MemoryEstimate(HandoffRecord):
    """results/memory/{model}.json, its keys in the fields' order (as it was always written)."""

    SORT_KEYS: ClassVar[bool] = False

    model: str = ""
    source: str = ""
    model_type: str = ""
    parameters: EstimateParameters = field(default_factory=EstimateParameters)
    dtype: str = ""  # weight scheme
    kv_dtype: str = ""
    context: int = 0
    batch: int = 1
    group_size: int | None = None  # the quantization group of grouped schemes
    weights_bytes: dict = field(default_factory=dict)  # scheme -> bytes
    weights_file_bytes: int | None = None  # the checkpoint as stored (local safetensors only)
    weights_resident_bytes: int = 0  # what one GPU at TP=1 holds, as vLLM lays it out
    weights_assumptions: dict = field(default_factory=dict)  # scheme -> what its bytes assume
    quantization: dict | None = None  # the checkpoint's quantization plan, when it has one
    moe: dict | None = None  # the experts' shape, for a mixture of experts
    kv_cache: EstimateKvCache = field(default_factory=EstimateKvCache)
    overheads: list[EstimateOverhead] = field(default_factory=list)
    cpu_footprint: dict = field(default_factory=dict)  # engine kind -> CPU terms (memory.cpu_runtime)
    vllm: EstimateVllm = field(default_factory=EstimateVllm)
    speed_bound: EstimateSpeedBound = field(default_factory=EstimateSpeedBound)
    notes: list[str] = field(default_factory=list)

    def overhead_bytes(self) -> dict[str, int]:
        return {o.name: int(o.bytes) for o in self.overheads}
