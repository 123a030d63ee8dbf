#!/usr/bin/env bash
# Issue 18 figure: how many modules outside the engine plug-ins name an engine kind.
# Counts code files (workflow/**/*.py, *.smk, Snakefile) outside workflow/infbench/engines/ with a
# quoted kind name ("transformers", "vllm", "llamacpp", "tgi", "sglang", "openai"), a comparison
# with one (== "tgi") or TGI's native run ("native-single"). Python-module imports of the
# transformers package (_require("transformers"), metadata.version("transformers")) are not kind names: left out.
# Usage: bench_scripts/kind_mentions.sh [-v]   (-v lists the matching lines)
set -euo pipefail
cd "$(dirname "$0")/.."
pattern="[\"'](transformers|vllm|llamacpp|tgi|sglang|openai)[\"']|native-single"
hits=$(grep -rnE "$pattern" Snakefile workflow --include='*.py' --include='*.smk' --include=Snakefile \
    | grep -v '^workflow/infbench/engines/' | grep -vE '(_require|version)\("transformers"\)' \
    | grep -vE '^[^:]+:[0-9]+:\s*#' || true)
[ "${1:-}" = "-v" ] && printf '%s\n' "$hits"
printf '%s\n' "$hits" | grep -v '^$' | cut -d: -f1 | sort -u | tee /dev/stderr | wc -l
