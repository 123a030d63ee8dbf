"""TGI's second measurement: the native /generate_stream route through the `text-generation` client.

TGI sends exactly one token per event there, so inter-token times are exact. Runs in the TGI env's
venv (text-generation pins huggingface-hub<1.0, which the harness cannot share), so it imports only
the standard library, jinja2, text_generation and infbench's stdlib-only modules.

    python -m infbench.measure.tgi_native --base-url URL --model-dir DIR --prompts FILE --max-tokens N --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from infbench.layout import NATIVE_RUN
from infbench.measure.recordfiles import write_records
from infbench.measure.records import RequestRecord


def chat_template(model_dir: Path) -> tuple[str, dict]:
    """The model's own chat template and its special tokens (the native route takes raw text)."""
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    template_file = model_dir / "chat_template.jinja"
    template = template_file.read_text() if template_file.exists() else tokenizer_config.get("chat_template")
    if not template:
        raise ValueError(f"{model_dir} has no chat template (chat_template.jinja or tokenizer_config.json)")
    specials = {k: v for k, v in tokenizer_config.items() if k in ("bos_token", "eos_token") and isinstance(v, str)}
    return template, specials


def render_prompt(template: str, specials: dict, messages: list[dict]) -> str:
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **specials)


async def measure(
    base_url: str,
    prompts: list[dict],
    template: str,
    specials: dict,
    max_tokens: int,
    engine: str,
    model: str,
    timeout_s: float,
) -> list[RequestRecord]:
    from text_generation import AsyncClient

    client = AsyncClient(f"{base_url}/generate_stream", timeout=int(timeout_s))
    records = []
    for index, prompt in enumerate(prompts):  # concurrency 1, like the single scenario
        record = RequestRecord(
            request_id=f"{NATIVE_RUN}-{index:04d}",
            prompt_id=prompt["id"],
            engine=engine,
            model=model,
            scenario=NATIVE_RUN,
            concurrency=1,
            send_time=time.time(),
            max_tokens=max_tokens,
            tokens_counted_by="events",
        )
        text = render_prompt(template, specials, prompt["messages"])
        start = time.perf_counter()
        parts = []
        try:
            async for event in client.generate_stream(text, do_sample=False, max_new_tokens=max_tokens):
                now = time.perf_counter() - start
                if event.details is not None:  # the last event: generated_tokens counts EOS too
                    record.completion_tokens = event.details.generated_tokens
                    record.finish_reason = str(event.details.finish_reason.value)
                if event.token.special:
                    continue  # EOS is not content
                if record.ttft_s is None:
                    record.ttft_s = now
                record.chunk_times_s.append(now)
                parts.append(event.token.text)
            record.latency_s = time.perf_counter() - start
            record.status = 200
            if record.completion_tokens is None:
                record.completion_tokens = len(record.chunk_times_s)
        except Exception as err:  # the client raises typed errors for HTTP and validation faults
            record.error = f"{type(err).__name__}: {err}"[:300]
        record.output_text = "".join(parts)
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infbench.measure.tgi_native", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--engine", default="tgi")
    parser.add_argument("--model", default="model")
    parser.add_argument(
        "--timeout-s", type=float, required=True, help="per request (the bench settings' request_timeout_s)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    prompts = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    template, specials = chat_template(args.model_dir)
    records = asyncio.run(
        measure(args.base_url, prompts, template, specials, args.max_tokens, args.engine, args.model, args.timeout_s)
    )
    write_records(args.out, records)
    failed = sum(r.error is not None for r in records)
    print(f"native /generate_stream: {len(records)} requests, {failed} failed", file=sys.stderr)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
