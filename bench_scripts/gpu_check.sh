#!/usr/bin/env bash
# The GPU path in one command, on a bare GPU box: no network, no Snakemake, no polars, no vLLM; just
# Python with torch (CUDA) and transformers, this repository and gpu_check/ made beforehand by
#   python bench_scripts/gpu_check_prepare.py            (on any machine with PyPI access)
#
#   bench_scripts/gpu_check.sh [--python PY] [--device cuda|cpu] [--out DIR] [--budget-s S]
#
# 1. installs only the wheels the box lacks from gpu_check/wheels (pip --no-index) and says how much
#    was carried; 2. uses PY as an existing environment (its pip freeze is the lock); 3. builds each
#    model (random weights from its architecture config, streamed to safetensors); 4. estimates each
#    model's memory; 5. runs `infbench bench` for every (engine, model) from the prepared spec files:
#    raw records, server.json, memory.json and metrics/ (the server's own metrics and NVML energy per
#    scenario) land in OUT/raw/ENGINE/MODEL/; 6. prints the key figures, joules per output token
#    per cell, and the estimate against NVML-measured memory with the error in %.
# Bring OUT back and run bench_scripts/gpu_check_merge.sh OUT on the CPU for the tables.
# --device cpu runs the same flow on a machine without a GPU (prepare with --device cpu too).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHECK=gpu_check
PY=""
DEVICE=""
OUT=""
BUDGET_S=480  # the whole check should fit in 8 minutes on one H100/H200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PY="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --check-dir) CHECK="$2"; shift 2 ;;
    --budget-s) BUDGET_S="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PREPARED="$CHECK/prepared"
WHEELS="$CHECK/wheels"
if [[ ! -f "$PREPARED/check.json" ]]; then
  echo "gpu_check: $PREPARED/check.json not found: run python bench_scripts/gpu_check_prepare.py first" >&2
  exit 2
fi
json() {  # json FILE EXPRESSION: a value from a JSON file, with the stdlib only
  "${PY:-python3}" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}
PY="${PY:-$(json "$PREPARED/check.json" "next(iter(d['engines'].values()))['python'] or 'python3'")}"
PREPARED_DEVICE="$(json "$PREPARED/check.json" "d['device']")"
DEVICE="${DEVICE:-$PREPARED_DEVICE}"
if [[ "$DEVICE" != "$PREPARED_DEVICE" ]]; then
  echo "gpu_check: --device $DEVICE, but $PREPARED was prepared for $PREPARED_DEVICE (gpu_check_prepare.py --device)" >&2
  exit 2
fi
OUT="${OUT:-$CHECK/out}"
mkdir -p "$OUT/logs" "$OUT/envs" "$OUT/models" "$OUT/memory" "$OUT/raw"
export PYTHONPATH="$ROOT/workflow"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1
START=$SECONDS
step() { printf '\n== [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }

step "host"
"$PY" - "$DEVICE" <<'EOF'
import importlib, platform, sys
print(f"python {platform.python_version()} at {sys.executable}")
for name in ("torch", "transformers", "tokenizers", "safetensors"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except ImportError:
        sys.exit(f"gpu_check: {name} is not importable by {sys.executable}: the check needs it on the box")
import torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False)")
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, torch CUDA {torch.version.cuda}")
EOF
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"

step "wheels: install only what $PY lacks, from $WHEELS (--no-index)"
if [[ -d "$WHEELS" ]]; then
  echo "carried: $(ls "$WHEELS"/*.whl 2>/dev/null | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) ($(du -sh "$CHECK" | cut -f1) in $CHECK/ with the prepared specs)"
fi
MISSING="$("$PY" - bench_scripts/gpu_check_requirements.txt <<'EOF'
import importlib.metadata, sys
names = [line.split("==")[0].strip() for line in open(sys.argv[1]) if line.strip() and not line.startswith("#")]
names.append("accelerate")
missing = []
for name in names:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        missing.append(name)
print(" ".join(missing))
EOF
)"
if [[ -z "$MISSING" ]]; then
  echo "nothing to install: every package is already there"
else
  echo "missing: $MISSING"
  if [[ ! -d "$WHEELS" ]]; then
    echo "gpu_check: $WHEELS not found (prepared with --no-wheels?) and $PY lacks: $MISSING" >&2
    exit 2
  fi
  # shellcheck disable=SC2086
  if ! "$PY" -m pip install --no-index --find-links "$WHEELS" $MISSING > "$OUT/logs/pip.log" 2>&1; then
    if grep -q externally-managed "$OUT/logs/pip.log"; then
      echo "$PY is externally managed (PEP 668): installing for this user (~/.local) instead"
      # shellcheck disable=SC2086
      "$PY" -m pip install --user --break-system-packages --no-index --find-links "$WHEELS" $MISSING \
        >> "$OUT/logs/pip.log" 2>&1 || { tail -20 "$OUT/logs/pip.log" >&2; exit 1; }
    else
      tail -20 "$OUT/logs/pip.log" >&2
      exit 1
    fi
  fi
  grep -E "^Successfully installed" "$OUT/logs/pip.log" || true
fi

step "existing environment: $PY (nothing installed by the pipeline; pip freeze is the lock)"
ENGINES="$(json "$PREPARED/check.json" "' '.join(d['engines'])")"
for engine in $ENGINES; do
  env_name="$(json "$PREPARED/check.json" "d['engines']['$engine']['env']")"
  kind="$(json "$PREPARED/check.json" "d['engines']['$engine']['kind']")"
  "$PY" -m infbench.cli existing-env --name "$env_name" --engine "$engine" --kind "$kind" --python "$PY" \
    --venv ".venvs/$env_name" --lock "$OUT/envs/$env_name.lock" --marker ".venvs/$env_name/.infbench-built"
done

MODELS="$(json "$PREPARED/models.json" "' '.join(d)")"
for model in $MODELS; do
  step "model $model"
  read -r source dtype seed serve_dtype context architecture < <(json "$PREPARED/models.json" \
    "' '.join('-' if d['$model'][k] is None else str(d['$model'][k]) for k in ('source', 'dtype', 'seed', 'serve_dtype', 'max_model_len', 'architecture'))")
  meta="$OUT/models/$model.json"
  if [[ -d "resources/models/$model" && -f "$meta" ]] && "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m['source']!=sys.argv[2] or m['dtype']!=sys.argv[3])" "$meta" "$source" "$dtype"; then
    echo "already built (resources/models/$model, $source, $dtype): reused"
  else
    # On CUDA the random weights are drawn on the GPU: seconds for a 7B model instead of a minute.
    "$PY" -m infbench.pipeline.models --name "$model" --source "$source" --dtype "$dtype" --seed "$seed" \
      --init-device "$DEVICE" --out "resources/models/$model" --meta "$meta" 2>&1 | tail -3
  fi
  if [[ "$architecture" != "-" ]]; then
    "$PY" -m infbench.cli memory-estimate --config "$architecture" --name "$model" --dtype "$serve_dtype" \
      --context "$context" --out "$OUT/memory/$model.json" > "$OUT/logs/estimate-$model.log" 2>&1 \
      || echo "estimate failed: see $OUT/logs/estimate-$model.log"
  else
    "$PY" -m infbench.cli memory-estimate --model-meta "$meta" --name "$model" --dtype "$serve_dtype" \
      --context "$context" --out "$OUT/memory/$model.json" > "$OUT/logs/estimate-$model.log" 2>&1 \
      || echo "estimate failed: see $OUT/logs/estimate-$model.log"
  fi
done

PROMPTS="$PREPARED/$(json "$PREPARED/check.json" "d['prompts']")"
FAILED=0
for engine in $ENGINES; do
  env_name="$(json "$PREPARED/check.json" "d['engines']['$engine']['env']")"
  for model in $MODELS; do
    budget=$(left)
    step "bench $engine / $model ($budget s of the budget left)"
    if (( budget < 30 )); then
      echo "skipped: the ${BUDGET_S} s budget is spent (--budget-s to allow more)"; FAILED=1; continue
    fi
    mkdir -p "$OUT/logs/bench/$engine"
    if ! timeout --signal=TERM --kill-after=30 "$budget" "$PY" -m infbench.cli bench \
        --engine-spec "$PREPARED/specs/engines/$engine.json" --model-spec "$PREPARED/specs/models/$model.json" \
        --prompts "$PROMPTS" --venv ".venvs/$env_name" --lock "$OUT/envs/$env_name.lock" \
        --out-dir "$OUT/raw/$engine/$model" --server-log "$OUT/logs/bench/$engine/$model.server.log" \
        --log "$OUT/logs/bench/$engine/$model.log" 2> "$OUT/logs/bench/$engine/$model.stderr"; then
      FAILED=1
      echo "FAILED: see $OUT/logs/bench/$engine/$model.log and .server.log; last lines:"
      tail -5 "$OUT/logs/bench/$engine/$model.log" 2>/dev/null || tail -5 "$OUT/logs/bench/$engine/$model.stderr"
    fi
  done
done

step "summary"
cp "$PREPARED/merge_plan.json" "$OUT/merge_plan.json"
cp "$PREPARED/check.json" "$OUT/check.json"
"$PY" bench_scripts/gpu_check_summary.py "$OUT"
step "done in $((SECONDS - START)) s; results in $OUT. On the CPU: bench_scripts/gpu_check_merge.sh $OUT"
exit "$FAILED"
