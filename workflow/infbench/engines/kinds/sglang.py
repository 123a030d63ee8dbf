"""SGLang's OpenAI server (`python -m sglang.launch_server`); CUDA only (envs/sglang.txt)."""

from __future__ import annotations

from infbench.engines import cache as cachectl
from infbench.engines import sampling as contract
from infbench.engines.base import Engine, ServerPlan, register


@register
class Sglang(Engine):
    """SGLang's OpenAI server (`python -m sglang.launch_server`); CUDA only (envs/sglang.txt)."""

    kind = "sglang"
    label = "SGLang"
    package = "sglang"

    def unavailable_reason(self, spec, model=None) -> str | None:
        if spec.device != "cuda":
            return "n/a: SGLang runs on CUDA GPUs only"
        return None

    def request_fields(self, spec) -> dict:
        return contract.sglang_fields(spec.sampling)

    def cache_plan(self, spec) -> cachectl.CachePlan:
        return cachectl.sglang_plan(list(spec.scenarios))

    def plan(self, spec, model, venv, host, port, gpu_ids=(), threads=1) -> ServerPlan:
        cache = self.cache_plan(spec)
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "sglang.launch_server",
            "--model-path",
            str(model.path),
            "--served-model-name",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            "--tp-size",
            str(max(1, model.gpus)),
            "--dtype",
            model.dtype,
            "--context-length",
            str(model.max_model_len),
            # The benchmark's explicit sampling, never the model's generation_config.json defaults.
            "--sampling-defaults",
            "openai",
            "--enable-metrics",  # its Prometheus endpoint, read around each scenario
            *cache.server_args,
            *spec.args,
        ]
        extra: dict = {}
        if spec.sampling.output_length == "fixed":
            extra = {"ignore_eos": True, "min_tokens": spec.sampling.max_tokens}
        return ServerPlan(
            command=command,
            health_path="/health",
            model_name=model.name,
            extra_body=extra,
            version_path="/server_info",
            fixed_length_control="ignore_eos + min_tokens",
            settings={"tensor parallel": str(max(1, model.gpus)), "prefix cache": cache.control},
        )
