"""The cached-token share of every scenario of a run, per engine: how much of the prompts the engines
served from their prefix caches, beside the cache state each scenario declared.

    python bench_scripts/cache_share.py                 # results/ of the default run
    python bench_scripts/cache_share.py --results DIR   # another run's results/

Reads the raw records (results/raw/ENGINE/MODEL/SCENARIO.jsonl): per request the prompt tokens and
the prompt tokens the engine said it served from its cache (`cached_prompt_tokens`: vLLM with
--enable-prompt-tokens-details, llama.cpp, SGLang with --enable-cache-report; null where the engine
cannot say). A cold scenario must show 0%; "n/a" means the engine did not report it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def shares(results: Path) -> list[dict]:
    """One row per (engine, model, scenario): requests, prompt tokens, cached tokens and their share."""
    rows = []
    for path in sorted((results / "raw").glob("*/*/*.jsonl")):
        engine, model, scenario = path.parent.parent.name, path.parent.name, path.stem
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        ok = [r for r in records if r.get("error") is None and r.get("status") == 200]
        if not ok:
            continue
        prompt = sum(r.get("prompt_tokens") or 0 for r in ok)
        reported = [r for r in ok if r.get("cached_prompt_tokens") is not None]
        cached = sum(r["cached_prompt_tokens"] for r in reported)
        reported_prompt = sum(r.get("prompt_tokens") or 0 for r in reported)
        states = sorted({str(r.get("cache")) for r in ok if r.get("cache")})
        rows.append(
            {
                "engine": engine,
                "model": model,
                "scenario": scenario,
                "cache": "/".join(states) or "not recorded",
                "requests": len(ok),
                "reported": len(reported),
                "prompt_tokens": prompt,
                "cached_tokens": cached if reported else None,
                "share": cached / reported_prompt if reported and reported_prompt else None,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "engine | model | scenario | cache | requests (reporting) | prompt tokens | cached tokens | cached %",
        "--- | --- | --- | --- | --- | --- | --- | ---",
    ]
    for r in rows:
        share = "n/a" if r["share"] is None else f"{r['share']:.1%}"
        cached = "n/a" if r["cached_tokens"] is None else str(r["cached_tokens"])
        lines.append(
            f"{r['engine']} | {r['model']} | {r['scenario']} | {r['cache']} | {r['requests']} ({r['reported']}) | "
            f"{r['prompt_tokens']} | {cached} | {share}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    if not (args.results / "raw").is_dir():
        print(f"cache_share: {args.results / 'raw'} not found: run the pipeline first", file=sys.stderr)
        return 2
    rows = shares(args.results)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))
    cold_hits = [r for r in rows if r["cache"] == "cold" and r["cached_tokens"]]
    for r in cold_hits:
        print(
            f"WARNING: {r['engine']}/{r['model']}/{r['scenario']} is declared cold but {r['cached_tokens']} prompt "
            "tokens came from the cache",
            file=sys.stderr,
        )
    return 1 if cold_hits else 0


if __name__ == "__main__":
    raise SystemExit(main())
