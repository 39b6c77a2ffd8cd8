#!/usr/bin/env bash
# The CPU one attached dashboard uses (ms of CPU per second, from /proc), early in a run at the
# seed's settings, in tmux at COLS x ROWS (default 120x40). PAUSED=1 pauses the run first (what
# an idle viewer costs). Usage: benchmarks/viewer_cpu.sh TEXT [extra chargpt-tui flags...]
set -euo pipefail
text=$(realpath "${1:?usage: $0 TEXT [flags...]}")
shift
cli=${CHARGPT_TUI:-chargpt-tui}
work=$(mktemp -d)
cd "$work"
"$cli" "$text" --max-iters 1000000 --eval-interval 1000000 --eval-iters 2 --sample-interval 1000000 "$@" \
  --out-dir speed --headless > train.log 2>&1 &
trainer=$!
trap 'tmux kill-session -t viewer-cpu 2>/dev/null || true; kill -INT "$trainer" 2>/dev/null || true' EXIT
until [ -f speed/server.json ]; do sleep 0.3; done
tmux new-session -d -s viewer-cpu -x "${COLS:-120}" -y "${ROWS:-40}" "$cli attach speed"
sleep 8
if [ -n "${PAUSED:-}" ]; then tmux send-keys -t viewer-cpu p; fi
sleep 7
pid=$(tmux display -p -t viewer-cpu '#{pane_pid}')
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
window=${WINDOW_S:-45}
a=$(cpu "$pid"); sleep "$window"; b=$(cpu "$pid")
echo "viewer: $(( (b - a) * 1000 / $(getconf CLK_TCK) / window )) ms of CPU a second over ${window} s" \
     "(${COLS:-120}x${ROWS:-40}${PAUSED:+, run paused})"
