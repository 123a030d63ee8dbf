"""Dump the memory estimate's file text (as the memory_estimate rule writes it) for every test
config under three option sets, to compare the bytes of two versions of the writer:

    git stash; PYTHONPATH=workflow python bench_scripts/estimate_bytes.py /tmp/est-old; git stash pop
    PYTHONPATH=workflow python bench_scripts/estimate_bytes.py /tmp/est-new
    diff -r /tmp/est-old /tmp/est-new   # nothing: the same bytes

Each file is also read back as handoff.MemoryEstimate and rewritten, which must give the same text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infbench.handoff import MemoryEstimate
from infbench.memory.estimate import estimate

DATA = Path("tests/data")  # relative, as the file names the source: run from the repository root
OPTIONS = [{}, {"context": 32768, "batch": 4, "kv_dtype": "fp8"}, {"dtype": "int4", "gpu_util": 0.8}]


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    configs = [
        *sorted((DATA / "configs").glob("*.json")),
        DATA / "smollm2-135m-config.json",
        DATA / "tiny-llama-config.json",
    ]
    for config in configs:
        for i, options in enumerate(OPTIONS):
            text = estimate(str(config), name=config.stem, **options).to_json_text() + "\n"
            path = out / f"{config.stem}.{i}.json"
            path.write_text(text)
            if MemoryEstimate.read(path).to_json_text() + "\n" != text:
                print(f"{path}: not rewritten byte for byte by its record", file=sys.stderr)
                return 1
    print(f"{len(configs) * len(OPTIONS)} estimates in {out}, each read back and rewritten identically")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the estimate files")
    sys.exit(main(parser.parse_args().out))
