#!/usr/bin/env bash
# On a machine with a CUDA GPU: everything this project checks there, in one go, with the GPU's
# name on every figure. The test suite (with the tests marked cuda, which skip elsewhere), then
# `chargpt-tui bench` in each dtype at the seed's settings and at the shakespeare preset's
# model size, then a short torchrun job on every GPU of the machine (NCCL), then the dashboard's
# overhead against headless in tmux (if tmux is there), then the time-to-quality table (seconds
# from launch to each validation loss, README's table) on the GPU: benchmarks/quality_table.sh,
# each recipe in float32 and auto, at most BUDGET seconds a run (600; most end far sooner on a
# GPU). SKIP_TABLE=1 leaves the table out; ROWS and DTYPES choose its rows (see that script).
#
#   benchmarks/gpu_check.sh TEXT          (tiny Shakespeare, for figures that compare)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
text=${1:?usage: gpu_check.sh TEXT}
python - <<'PY' || { echo "gpu_check: no CUDA GPU here"; exit 2; }
import torch, sys
if not torch.cuda.is_available():
    sys.exit(1)
p = torch.cuda.get_device_properties(0)
print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
      f"bfloat16: {torch.cuda.is_bf16_supported()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv,noheader 2>/dev/null | sed 's/^/nvidia-smi: /'

echo "== test suite (cuda tests included)"
(cd "$here/.." && python -m pytest -q -p no:cacheprovider 2>&1 | tail -5)

echo "== bench: the seed's settings (batch 64, block 256, 4 x 128), each dtype"
for dtype in float32 auto bfloat16 float16; do
    printf '%-9s ' "$dtype"
    chargpt-tui bench --text "$text" --device cuda --dtype "$dtype" --steps 50 --warmup 10 2>&1 | tail -1
done
echo "== bench: the shakespeare preset's model (6 x 384, block 256, batch 64), each dtype"
for dtype in float32 auto bfloat16 float16; do
    printf '%-9s ' "$dtype"
    chargpt-tui bench --text "$text" --device cuda --dtype "$dtype" --n-layers 6 --n-embed 384 --n-heads 6 \
        --steps 50 --warmup 10 --gen-tokens 0 2>&1 | tail -1
done

gpus=$(python -c "import torch; print(torch.cuda.device_count())")
echo "== torchrun: the shakespeare preset on all $gpus GPU(s), NCCL, 200 steps, then resumed on one GPU"
runs=$(mktemp -d)
( cd "$runs" && timeout 600 torchrun --standalone --nproc-per-node="$gpus" -m chargpt_tui "$text" --preset shakespeare \
    --device cuda --max-iters 200 --eval-interval 100 --eval-iters 20 --sample-interval 100 --headless \
    --out-dir ddp 2>&1 | grep -E "training on|^step|finished|error|lost" ) || echo "torchrun: FAILED"
( cd "$runs" && timeout 300 chargpt-tui --resume ddp/ckpt.pt --max-iters 220 --eval-interval 20 --headless 2>&1 \
    | grep -E "resumed with|^step 220|finished|error" ) || echo "resume on one GPU: FAILED"
rm -rf "$runs"

if command -v tmux >/dev/null; then
    echo "== dashboard overhead against headless (tmux)"
    STEPS=${STEPS:-300} "$here/tui_in_tmux.sh" "$text" 2 --device cuda --dtype auto 2>&1 | tail -8
else
    echo "== dashboard overhead: skipped (no tmux; apt-get install -y tmux)"
fi

if [ -z "${SKIP_TABLE:-}" ]; then
    echo "== time to quality on the GPU: seconds from launch to each validation loss (at most ${BUDGET:-600} s a run)"
    bash "$here/quality_table.sh" cuda "$text" 2>/dev/null || echo "quality table: FAILED"
fi
