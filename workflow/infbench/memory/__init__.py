"""Model memory estimator: "can I run it?" without downloading weights.

Modules, one concern each:
  params    exact parameter counts (meta-device model or safetensors headers)
  quant     weight storage schemes as data (bytes, scales, what stays 16-bit, sources)
  quantconfig  a checkpoint's quantization_config read into a plan (unknown methods refused)
  weights   weights as stored and as vLLM holds them per GPU under a plan (padding, TP, MoE)
  kvcache   KV-cache bytes per token from the model config
  gpus      catalogue of common GPUs: CUDA-reported memory and published bandwidth, cited
  vllm      vLLM's start-up accounting by engine version (defaults, activation peak, non-torch)
  vllmlog   vLLM's own start-up figures, parsed from its server log
  facts     reading the model: counts, KV layout, MoE shape, quantization, sizes (ModelFacts)
  factcache facts cached by the config's content (a warm estimate imports no torch)
  fit       the vLLM fit of one GPU at one TP size, the TP search, the decode speed bound
  records   the typed Estimate and its JSON (results/memory/{model}.json)
  estimate  the combined estimate: check the shape asked for, fit it on every GPU
  render    the text report, byte and count formats
  cpu_runtime  each engine's CPU memory beside the weights
  table     results/tables/memory.md (estimate beside measurement)
  web       `estimate --web`: the same estimate as a local page (Starlette)
  cli       `estimate`, `memory-estimate` and `memory-table` subcommands

Only stdlib, torch, transformers and safetensors are imported (starlette and uvicorn by `web`
alone, when asked for), so the pipeline can run this inside the tools venv.
"""

from infbench.memory.errors import EstimateError

__all__ = ["EstimateError"]
