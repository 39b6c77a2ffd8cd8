#!/usr/bin/env bash
# Training and generation speed against ../shared/bench/seed_reference.py, alternating runs in
# one session at the seed's hyperparameters (or extra flags given to both), then the ratios.
#
#   benchmarks/speed_vs_seed.sh ../shared/data/tinyshakespeare.txt [ROUNDS] [extra bench flags]
#
# Each round: the seed, then chargpt-tui in each of $DTYPES (default "float32 auto bfloat16"; a
# dtype this machine refuses, bfloat16 on a CPU without it, is left out with a note). The CPU
# the figures come from is printed first: they differ between machines of different kinds.
set -euo pipefail
text=${1:?usage: speed_vs_seed.sh TEXT [ROUNDS] [flags]}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
here=$(cd "$(dirname "$0")" && pwd)
reference=${SEED_REFERENCE:-$here/../../shared/bench/seed_reference.py}
dtypes=${DTYPES:-float32 auto bfloat16}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "native bfloat16: $(grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo yes || echo no)"
for ((r = 1; r <= rounds; r++)); do
    python "$reference" bench --text "$text" "$@" | sed 's/^/seed /' >>"$out"
    for dtype in $dtypes; do
        gen=(); [ "$dtype" = float32 ] || gen=(--gen-tokens 0)  # generation once a round, in float32
        if line=$(chargpt-tui bench --text "$text" --dtype "$dtype" "${gen[@]}" "$@" 2>/tmp/speed_vs_seed.err); then
            echo "$dtype $line" >>"$out"
        elif [ "$r" = 1 ]; then
            echo "($dtype left out: $(cat /tmp/speed_vs_seed.err))"
        fi
    done
done
python - "$out" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, _, payload = line.partition(" ")
    runs.setdefault(label, []).append(json.loads(payload))
seed = runs.pop("seed")
for i, base in enumerate(seed):
    parts = [f"seed {base['step_ms']:.0f} ms"]
    for label, results in runs.items():
        ours = results[i]
        parts.append(f"{label} ({ours['dtype']}) {ours['step_ms']:.0f} ms {base['step_ms'] / ours['step_ms']:.2f}x "
                     f"mfu {ours['mfu']:.2f}")
    if "float32" in runs:
        gen = runs["float32"][i]["gen_tokens_per_s"]
        parts.append(f"generation {gen:.0f} vs {base['gen_tokens_per_s']:.0f} chars/s "
                     f"({gen / base['gen_tokens_per_s']:.1f}x)")
    print(f"round {i + 1}: " + ", ".join(parts))
for label, results in runs.items():
    ratios = [b["step_ms"] / o["step_ms"] for b, o in zip(seed, results)]
    print(f"median training step: {label} {statistics.median(ratios):.2f}x the seed's "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")
if "float32" in runs:
    ratios = [o["gen_tokens_per_s"] / b["gen_tokens_per_s"] for b, o in zip(seed, runs["float32"])]
    print(f"median generation: {statistics.median(ratios):.1f}x the seed's")
PY
