#!/usr/bin/env bash
# The sweep that chose the cpu-10min preset: each candidate trained on TEXT for at most 10
# minutes from launch, its time to each validation loss target printed as a JSON line
# (benchmarks/time_to_quality.py). Run alone on the machine; it takes about 10 minutes a line.
# EXTRA_FLAGS="--dtype float32" runs them all in float32 (the default: --dtype auto).
# The table in README (and docs/performance.md) of the presets themselves (seed, cpu, nanoGPT's
# CPU recipe, cpu-10min) is benchmarks/quality_table.sh's.
#
#   bash benchmarks/cpu_10min_sweep.sh TEXT [CANDIDATE...]     (default: every candidate)
set -euo pipefail
text="$1"; shift
cd "$(dirname "$0")/.."
common=(--dropout 0 --lr-schedule cosine --warmup-iters 100 --weight-decay 0.1 --grad-clip 1.0
        --eval-iters 20 --sample-interval 100000)
declare -A candidates=(
  # 4 layers x 128, block 128, batch 16: ~99 ms a step on 2 cores, ~5,400 steps in 9 minutes
  [4x128-muon]="--n-layers 4 --n-embed 128 --n-heads 4 --block-size 128 --batch-size 16 --max-iters 5400
                --eval-interval 300 --learning-rate 2e-3 --min-lr 2e-4 --optimizer muon --muon-lr 0.02"
  [4x128-adamw]="--n-layers 4 --n-embed 128 --n-heads 4 --block-size 128 --batch-size 16 --max-iters 5400
                 --eval-interval 300 --learning-rate 2e-3 --min-lr 2e-4"
  # the chosen one, as the preset has it
  [cpu-10min]="--preset cpu-10min"
  # the cpu preset's sizes (2 x 128, block 64, batch 12): ~22 ms a step, ~24,000 steps
  [2x128-muon]="--n-layers 2 --n-embed 128 --n-heads 4 --block-size 64 --batch-size 12 --max-iters 24000
                --eval-interval 1500 --learning-rate 2e-3 --min-lr 2e-4 --optimizer muon --muon-lr 0.02"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!candidates[@]}")
for name in "${names[@]}"; do
  flags=(${candidates[$name]})  # (word splitting wanted)
  [ "$name" = cpu-10min ] || flags+=("${common[@]}")
  echo "{\"candidate\": \"$name\", \"result\": $(python benchmarks/time_to_quality.py "$text" --budget 600 -- \
       "${flags[@]}" ${EXTRA_FLAGS:-})}"
done
