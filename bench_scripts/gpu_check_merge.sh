#!/usr/bin/env bash
# The CPU half of the GPU check: tables from the folder gpu_check.sh wrote on the GPU box.
#   bench_scripts/gpu_check_merge.sh gpu_check/out
# Runs the pipeline's own merge (polars) and memory table on the raw records, server.json and
# memory.json files of OUT/raw/ENGINE/MODEL/, writes OUT/tables/, and prints them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: gpu_check_merge.sh OUT (the folder gpu_check.sh wrote)}"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT/workflow"
[[ -f "$OUT/merge_plan.json" ]] || { echo "gpu_check_merge: $OUT/merge_plan.json not found: is $OUT a gpu_check.sh output?" >&2; exit 2; }
"$PY" -m infbench.cli merge --raw-dir "$OUT/raw" --out-dir "$OUT/tables" --plan "$(cat "$OUT/merge_plan.json")"
shopt -s nullglob
estimates=("$OUT"/memory/*.json)
measured=("$OUT"/raw/*/*/memory.json)
if (( ${#estimates[@]} )) && (( ${#measured[@]} )); then
  "$PY" -m infbench.cli memory-table --estimates "${estimates[@]}" --measured "${measured[@]}" \
    --out "$OUT/tables/memory.md"
fi
for table in inference_speed throughput memory; do
  [[ -f "$OUT/tables/$table.md" ]] && { echo; cat "$OUT/tables/$table.md"; }
done
echo
echo "tables in $OUT/tables (details.md: every figure per scenario)"
