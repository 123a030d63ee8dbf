"""Capture an engine's Prometheus text before, during and after real chat requests, with the usage
each response reported: the test data in tests/data/metrics/ was made with this.

    python bench_scripts/capture_metrics.py http://127.0.0.1:PORT MODEL_NAME OUT_PREFIX [--max-tokens 16]

Sends 4 prompts one at a time, then 4 at once (scraping once while they run), then scrapes again;
writes OUT_PREFIX.before.prom, .during.prom, .after.prom and .usage.json (one usage per response).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import httpx

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three prime numbers.",
    "Explain gravity in one sentence.",
]


def chat(base: str, model: str, prompt: str, max_tokens: int, usages: list[dict]) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=900, trust_env=False) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usages.append(chunk["usage"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base_url")
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    def scrape(name: str) -> None:
        text = httpx.get(f"{args.base_url}/metrics", timeout=10, trust_env=False).text
        args.out.with_name(f"{args.out.name}.{name}.prom").write_text(text)

    usages: list[dict] = []
    scrape("before")
    for prompt in PROMPTS:
        chat(args.base_url, args.model, prompt, args.max_tokens, usages)
    threads = [
        threading.Thread(target=chat, args=(args.base_url, args.model, p, args.max_tokens, usages)) for p in PROMPTS
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    scrape("during")
    for thread in threads:
        thread.join()
    scrape("after")
    args.out.with_name(f"{args.out.name}.usage.json").write_text(json.dumps(usages, indent=1))
    print(len(usages), "responses,", sum(u["completion_tokens"] for u in usages), "completion tokens")


if __name__ == "__main__":
    main()
