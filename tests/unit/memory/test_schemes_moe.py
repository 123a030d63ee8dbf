"""Quantization schemes as data, checkpoints' quantization configs, MoE shapes and the GPU
catalogue's names: the estimator's answers for the models people run in 2026."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from infbench.cli import main  # noqa: E402
from infbench.memory import quant  # noqa: E402
from infbench.memory.errors import EstimateError  # noqa: E402
from infbench.memory.estimate import build_estimate  # noqa: E402
from infbench.memory.facts import model_facts  # noqa: E402
from infbench.memory.gpus import GIB, find_gpu, match_device  # noqa: E402
from infbench.memory.params import TensorInfo  # noqa: E402
from infbench.memory.quantconfig import read_plan  # noqa: E402
from infbench.memory.weights import weights_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "configs"
M = TensorInfo("model.layers.0.mlp.up_proj.weight", (4096, 4096), "linear")
N = 4096 * 4096


def test_scheme_bytes_follow_their_layouts():
    assert quant.tensor_bytes("mxfp4", M) == N // 2 + N // 32  # FP4 + one E8M0 per 32
    assert quant.tensor_bytes("nvfp4", M) == N // 2 + N // 16 + 8  # FP4 + one E4M3 per 16 + 2 fp32
    assert quant.tensor_bytes("fp8-block", M) == N + 4 * 32 * 32  # one fp32 per 128x128 tile
    assert quant.tensor_bytes("fp8-channel", M) == N + 4 * 4096
    assert quant.tensor_bytes("int4-group", M) == N // 2 + 2 * 4096 * 32  # symmetric: no zeros
    assert quant.tensor_bytes("gptq-int8", M) == N + 4096 * 32 * 2 + 32 * 4096 + 4 * 4096
    # Biases stored 2-D (fused MoE experts) and routers are not quantized.
    bias = TensorInfo("model.layers.0.mlp.experts.gate_up_proj_bias", (128, 5760), "linear")
    router = TensorInfo("model.layers.0.mlp.router.weight", (128, 2880), "router")
    assert quant.tensor_bytes("mxfp4", bias) == 2 * bias.numel
    assert quant.tensor_bytes("fp8", router) == 2 * router.numel
    assert all(s.source and s.assumption for s in quant.SCHEMES.values())


def test_checkpoint_quantization_configs_are_read_or_refused():
    ct = read_plan(
        {
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {
                "group_0": {
                    "targets": ["Linear"],
                    "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 64, "symmetric": True},
                }
            },
            "ignore": ["lm_head", "re:.*mlp.gate$"],
        }
    )
    assert (ct.scheme, ct.group_size, ct.skip) == ("int4-group", 64, ("lm_head", "re:.*mlp.gate$"))
    fp8 = {"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "weights": {}}}}
    fp8["config_groups"]["g"]["weights"] = {
        "num_bits": 8,
        "type": "float",
        "strategy": "block",
        "block_structure": [128, 128],
    }
    assert read_plan(fp8).scheme == "fp8-block"
    assert read_plan({"quant_method": "fp8", "weight_block_size": [128, 128]}).scheme == "fp8-block"
    assert read_plan({"quant_method": "fp8"}).scheme == "fp8"
    nv = read_plan(
        {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}
    )
    assert (nv.scheme, nv.skip) == ("nvfp4", ("lm_head",))
    assert read_plan({"quant_method": "modelopt", "quantization": {"quant_algo": "FP8"}}).scheme == "fp8"
    assert read_plan({"quant_method": "gptq", "bits": 8, "group_size": 128}).scheme == "gptq-int8"
    # What is not modelled is an error naming it, never a silent bf16.
    with pytest.raises(EstimateError, match="quant_method 'hqq' is not modelled"):
        read_plan({"quant_method": "hqq"})
    with pytest.raises(EstimateError, match="gptq with 3-bit"):
        read_plan({"quant_method": "gptq", "bits": 3})
    bad = {"quant_method": "compressed-tensors", "config_groups": {"odd": {"weights": {"num_bits": 6, "type": "int"}}}}
    with pytest.raises(EstimateError, match="group 'odd'"):
        read_plan(bad)


def test_gpt_oss_mxfp4_keeps_attention_and_routers_in_bf16():
    oss = model_facts(str(DATA / "gpt-oss-120b.json"))
    assert oss.quantized_as == "mxfp4" and oss.moe.experts == 128 and oss.moe.top_k == 4
    plan = oss.quant
    by_name = {t.name: t for t in oss.params.tensors}
    assert plan.scheme_for(by_name["model.layers.0.mlp.experts.gate_up_proj"]) == "mxfp4"
    assert plan.scheme_for(by_name["model.layers.0.self_attn.q_proj.weight"]) is None
    assert plan.scheme_for(by_name["model.layers.0.mlp.router.weight"]) is None
    stored = weights_model(oss, "mxfp4", 128).stored_bytes / GIB
    assert 60 < stored < 61.5  # the published checkpoint: about 65 GB
    # Read as bf16 it would be 4x that: the bug the issue reported.
    assert build_estimate(oss, context=16384, gpus=[find_gpu("A100-80GB")], tp=4).dtype == "mxfp4"
    # Decode reads the routed experts only: far below the resident weights.
    fit = build_estimate(oss, context=1024, gpus=[find_gpu("H100-80GB")], tp=1).fits[0]
    assert fit.decode_bytes_per_token < fit.weights_bytes / 4


def test_moe_shape_drives_the_activation_peak():
    moe = model_facts(str(DATA / "qwen3-30b-a3b.json"))
    m = moe.moe
    assert (m.experts, m.top_k, m.expert_intermediate, m.moe_layers, m.dense_layers) == (128, 8, 768, 48, 0)
    # intermediate_size (the unused dense width) plays no part: fused_moe's caches do.
    from dataclasses import replace

    wider = replace(moe, intermediate_size=10 * moe.intermediate_size)
    kw = dict(context=4096, gpus=[find_gpu("H100-80GB")], tp=1, max_num_seqs=1, sampler="flashinfer")
    assert build_estimate(moe, **kw).fits[0].activation_bytes == build_estimate(wider, **kw).fits[0].activation_bytes
    assert "top-8" in " ".join(build_estimate(moe, **kw).notes) and "expert parallelism" in " ".join(
        build_estimate(moe, **kw).notes
    )


def test_gpu_names_are_exact_and_capacities_cited():
    with pytest.raises(EstimateError, match="'A100' is ambiguous: say which, one of A100-40GB, A100-80GB"):
        find_gpu("A100")
    with pytest.raises(EstimateError, match="did you mean"):
        find_gpu("H-100")
    assert find_gpu("rtx 4090").memory_bytes / GIB == pytest.approx(23.55)
    assert find_gpu("A100-40GB").memory_bytes / GIB == pytest.approx(39.38)
    for name in ("A10", "A10G", "T4", "V100", "L40", "L40S", "A6000", "H100-PCIe", "H100-NVL", "H20", "B200", "MI300X"):
        gpu = find_gpu(name)
        assert gpu.memory_source and gpu.bandwidth_source and gpu.bandwidth_bytes_s
    # NVML names map to the right card, the longest match first ("NVIDIA A10" is not an A100).
    assert match_device("NVIDIA A10").name == "A10-24GB"
    assert match_device("NVIDIA A100-SXM4-80GB").name == "A100-80GB"


def test_cli_takes_vllms_flag_names_and_shows_its_own_usage(capsys):
    cfg = str(DATA / "qwen3-30b-a3b.json")
    args = [
        "estimate",
        cfg,
        "--gpu",
        "A10-24GB",
        "--max-model-len",
        "1024",
        "--gpu-memory-utilization",
        "0.9",
        "--tensor-parallel-size",
        "4",
        "--max-num-seqs",
        "1",
        "--max-num-batched-tokens",
        "2048",
        "--kv-cache-dtype",
        "fp8",
        "--vllm-version",
        "0.8.5",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    fit = out["vllm"]["gpus"][0]
    assert (fit["tp"], fit["max_num_seqs"], fit["batched_tokens"], out["kv_dtype"]) == (4, 1, 2048, "fp8")
    assert not fit["fits"] and "capturing" in fit["reason"]
    assert main([*args, "--enforce-eager"]) == 0
    assert json.loads(capsys.readouterr().out)["vllm"]["gpus"][0]["fits"]
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", cfg, "--max-model-length", "1024"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: infbench estimate" in err and "unrecognized arguments: --max-model-length" in err
    assert "memory-table" not in err


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "odd.json").write_text(json.dumps({"model_type": "no-such-arch", "hidden_size": 8}))
    assert main(["estimate", str(tmp_path / "odd.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'no-such-arch' is not an architecture transformers" in err
    assert main(["estimate", str(DATA / "qwen3-30b-a3b.json"), "--gpu", "A100"]) == 2
    assert "ambiguous" in capsys.readouterr().err
    assert main(["estimate", str(DATA / "qwen3-30b-a3b.json"), "--tp", "3"]) == 2
    assert "32 attention heads (4 KV heads) of qwen3-30b-a3b do not split over 3 GPUs" in capsys.readouterr().err
    quantized = json.loads((DATA / "qwen3-30b-a3b.json").read_text())
    quantized["quantization_config"] = {"quant_method": "sparse-magic"}
    (tmp_path / "q.json").write_text(json.dumps(quantized))
    assert main(["estimate", str(tmp_path / "q.json")]) == 2
    assert "quant_method 'sparse-magic' is not modelled" in capsys.readouterr().err


def test_cpu_bandwidth_only_when_asked_or_measured(tmp_path, capsys, monkeypatch):
    cfg = str(DATA / "meta-llama-3-8b.json")
    monkeypatch.chdir(tmp_path)
    assert main(["estimate", cfg, "--gpu", "L4"]) == 0
    assert "Local CPU" not in capsys.readouterr().out  # nothing measured on a plain run
    (tmp_path / "results" / "hardware").mkdir(parents=True)
    (tmp_path / "results" / "hardware" / "bandwidth.json").write_text(json.dumps({"bandwidth_bytes_s": 2.5e10}))
    assert main(["estimate", cfg, "--gpu", "L4"]) == 0
    assert "25.0 GB/s, measured by the pipeline" in capsys.readouterr().out


def test_facts_are_cached_by_content(tmp_path):
    # The second estimate of a config needs neither torch nor transformers.
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    code = (
        "import sys; from infbench.cli import main; "
        f"main(['estimate', {str(DATA / 'qwen3-235b-a22b.json')!r}, '--json']); "
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].stderr.strip().endswith("True") and runs[1].stderr.strip().endswith("False")
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)
