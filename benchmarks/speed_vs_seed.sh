#!/usr/bin/env bash
# Training and generation speed against ../shared/bench/seed_reference.py, alternating runs in
# one session at the seed's hyperparameters (or extra flags given to both), then the ratios.
#
#   benchmarks/speed_vs_seed.sh ../shared/data/tinyshakespeare.txt [ROUNDS] [extra bench flags]
set -euo pipefail
text=${1:?usage: speed_vs_seed.sh TEXT [ROUNDS] [flags]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
reference=${SEED_REFERENCE:-$here/../../shared/bench/seed_reference.py}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for ((r = 1; r <= rounds; r++)); do
    python "$reference" bench --text "$text" "$@" | sed 's/^/seed /' >>"$out"
    chargpt-tui bench --text "$text" "$@" | sed 's/^/fp32 /' >>"$out"
    chargpt-tui bench --text "$text" --dtype bfloat16 --gen-tokens 0 "$@" | sed 's/^/bf16 /' >>"$out"
done
python - "$out" <<'PY'
import json, statistics, sys
runs = {"seed": [], "fp32": [], "bf16": []}
for line in open(sys.argv[1]):
    label, _, payload = line.partition(" ")
    runs[label].append(json.loads(payload))
for i, (seed, fp32, bf16) in enumerate(zip(runs["seed"], runs["fp32"], runs["bf16"]), 1):
    print(f"round {i}: step ms seed {seed['step_ms']:.0f}, fp32 {fp32['step_ms']:.0f} "
          f"({seed['step_ms'] / fp32['step_ms']:.2f}x), bf16 {bf16['step_ms']:.0f} "
          f"({seed['step_ms'] / bf16['step_ms']:.2f}x); generation chars/s seed {seed['gen_tokens_per_s']:.0f}, "
          f"ours {fp32['gen_tokens_per_s']:.0f} ({fp32['gen_tokens_per_s'] / seed['gen_tokens_per_s']:.1f}x)")
def median_ratio(key, a, b, invert=False):
    ratios = [(x[key] / y[key]) if not invert else (y[key] / x[key]) for x, y in zip(runs[a], runs[b])]
    return statistics.median(ratios)
print(f"median: fp32 training {median_ratio('step_ms', 'seed', 'fp32'):.2f}x, "
      f"bf16 training {median_ratio('step_ms', 'seed', 'bf16'):.2f}x, "
      f"generation {median_ratio('gen_tokens_per_s', 'seed', 'fp32', invert=True):.1f}x the seed's")
PY
