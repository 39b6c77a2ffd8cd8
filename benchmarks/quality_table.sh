#!/usr/bin/env bash
# The time-to-quality table of README and docs/performance.md, on one device: for each recipe
# and dtype, seconds from launch to each validation loss target (2.0, 1.88, 1.75, 1.60), within
# a budget a run (benchmarks/time_to_quality.py), then the table in Markdown. Run alone on the
# machine; give the device with the figures (benchmarks/gpu_check.sh runs it on a GPU).
#
#   bash benchmarks/quality_table.sh DEVICE TEXT          (DEVICE: cpu, cuda, mps)
#
# Environment: BUDGET (seconds a run, 600), ROWS (recipes; default seed cpu nanogpt-cpu cpu-10min,
# and shakespeare off the CPU), DTYPES (default "float32 auto"), JSON_OUT (a file for the raw lines).
set -euo pipefail
device=${1:?usage: quality_table.sh DEVICE TEXT}
text=${2:?usage: quality_table.sh DEVICE TEXT}
cd "$(dirname "$0")/.."
budget=${BUDGET:-600}
declare -A recipes=(
  [seed]="--preset seed"
  [cpu]="--preset cpu"
  # nanoGPT's CPU recipe (its README) in this tool: its shakespeare_char config at 4 x 128,
  # block 64, batch 12, 2000 iters, no dropout, 20 evaluation batches
  [nanogpt-cpu]="--preset shakespeare --n-layers 4 --n-embed 128 --n-heads 4 --block-size 64 --batch-size 12
                 --max-iters 2000 --dropout 0 --eval-iters 20"
  [cpu-10min]="--preset cpu-10min"
  [shakespeare]="--preset shakespeare"
)
default_rows="seed cpu nanogpt-cpu cpu-10min"
[ "$device" = cpu ] || default_rows+=" shakespeare"
rows=(${ROWS:-$default_rows})  # (word splitting wanted)
raw=${JSON_OUT:-$(mktemp)}
: >"$raw"
for name in "${rows[@]}"; do
  [ -n "${recipes[$name]:-}" ] || { echo "quality_table: no recipe named $name" >&2; exit 2; }
  for dtype in ${DTYPES:-float32 auto}; do
    flags=(${recipes[$name]} --device "$device" --dtype "$dtype")
    result=$(python benchmarks/time_to_quality.py "$text" --budget "$budget" -- "${flags[@]}")
    echo "{\"recipe\": \"$name\", \"asked\": \"$dtype\", \"result\": $result}" | tee -a "$raw" >&2
  done
done
python - "$raw" "$budget" <<'PY'
import json, sys
budget = float(sys.argv[2])
print(f"| recipe | dtype | 2.0 | 1.88 | 1.75 | 1.60 | best (when) | steps in {budget:g} s |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row["result"]
    cells = [f"{s:g} s" if s is not None else "–" for s in r["seconds_to"].values()]
    dtype = r["dtype"] or "?"
    if row["asked"] != dtype:
        dtype = f"{row['asked']} ({dtype})"
    best = f"{r['best_val']:.2f} ({r['best_at_s']:g} s)" if r["best_at_s"] is not None else "–"
    failed = f" exit {r['exit']}: {r['stderr_tail'].strip()[-80:]}" if r.get("stderr_tail") else ""
    print(f"| {row['recipe']} | {dtype} | " + " | ".join(cells) + f" | {best} | {r['steps']}{failed} |")
PY
