"""Model memory estimator: "can I run it?" without downloading weights.

Modules, one concern each:
  params    exact parameter counts (meta-device model or safetensors headers)
  quant     bytes per weight dtype / quantization scheme
  kvcache   KV-cache bytes per token from the model config
  gpus      catalogue of common GPUs: CUDA-reported memory and published bandwidth, cited
  vllm      vLLM's start-up accounting by engine version (defaults, activation peak, non-torch)
  vllmlog   vLLM's own start-up figures, parsed from its server log
  estimate  the combined Estimate, the vLLM fit, the decode speed bound, text/JSON rendering
  table     results/tables/memory.md (estimate beside measurement)
  cli       `estimate`, `memory-estimate` and `memory-table` subcommands

Only stdlib, torch, transformers and safetensors are imported, so the pipeline
can run this inside the tools venv.
"""

from infbench.memory.errors import EstimateError

__all__ = ["EstimateError"]
