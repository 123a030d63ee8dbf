"""The sampling contract in each engine's own spelling: every field an engine would otherwise fill in
from its own or the model's defaults, stated on every request (docs/cache-and-sampling.md has the
defaults each engine would use).

The config sets temperature, top_p and seed (sampling.*); everything else is off: no top-k, no
min-p, no typical-p, no repetition, presence or frequency penalty, no other sampler. Greedy is
temperature 0. Spellings and traps, per engine:

- vLLM, SGLang: the OpenAI fields plus top_k (0 / -1: off), min_p and repetition_penalty.
- llama.cpp: its own names (repeat_penalty, typical_p), and its samplers that are on by default
  (top_k 40, min_p 0.05) or could be in another build (dry, xtc, top-n-sigma, mirostat) turned off.
- transformers serve: `temperature`, `top_p` and `seed` in the body; the rest inside a full
  `generation_config` (which replaces the model's generation_config.json); top_k stated as 0, since
  its own default is 50; frequency/presence penalties left out (it maps the first to a repetition
  penalty and ignores the second).
- TGI's chat route: no top_k/min_p fields (off); `top_p` only below 1 (1.0 is refused: it must be in
  (0, 1)); `presence_penalty` never (it becomes a repetition penalty of value + 2).
"""

from __future__ import annotations

from typing import Any


def _base(sampling: Any) -> dict:
    fields = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields


def openai_fields(sampling: Any) -> dict:
    """An unknown OpenAI-compatible server: the fields OpenAI defines, nothing it may not know."""
    return {**_base(sampling), "presence_penalty": 0.0, "frequency_penalty": 0.0}


def vllm_fields(sampling: Any) -> dict:
    return {
        **_base(sampling),
        "top_k": 0,  # off (vLLM: 0 or -1)
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }


def sglang_fields(sampling: Any) -> dict:
    return {**vllm_fields(sampling), "top_k": -1}  # SGLang: -1 is off


def llamacpp_fields(sampling: Any) -> dict:
    return {
        **_base(sampling),
        "top_k": 0,  # off (its default is 40)
        "min_p": 0.0,  # off (its default is 0.05)
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "top_n_sigma": -1.0,
        "mirostat": 0,
    }


def transformers_generation_config(sampling: Any, eos, pad, max_new_tokens: int, fixed_length: bool) -> dict:
    """The full generation_config transformers serve is sent (the model's own file then never applies)."""
    config = {
        "do_sample": sampling.temperature > 0,
        "max_new_tokens": max_new_tokens,
        "repetition_penalty": 1.0,
        "eos_token_id": eos,
        "pad_token_id": pad if pad is not None else eos,
    }
    if sampling.temperature > 0:  # sampling fields only when sampling (it warns about them under greedy)
        # top_k off: GenerationConfig's own default is 50
        config.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, typical_p=1.0)
    if fixed_length:
        config["min_new_tokens"] = max_new_tokens
    return config


def transformers_fields(sampling: Any) -> dict:
    """The body's own sampling fields (the rest travels in the generation_config)."""
    return _base(sampling)


def tgi_fields(sampling: Any) -> dict:
    fields = {"temperature": sampling.temperature, "frequency_penalty": 0.0}
    if sampling.top_p < 1.0:  # TGI refuses 1.0; left out, nucleus sampling is off
        fields["top_p"] = sampling.top_p
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    return fields
