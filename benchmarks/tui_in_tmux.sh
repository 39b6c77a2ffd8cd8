#!/usr/bin/env bash
# The dashboard in a real terminal (tmux): training overhead against headless, key latency, and
# the bytes written to the terminal. Needs tmux. Usage:
#   benchmarks/tui_in_tmux.sh TEXT [ROUNDS] [extra chargpt-tui flags...]
# Prints one line per measurement. Defaults: the seed preset, 40 steps per run, 2 rounds.
set -euo pipefail
text=${1:?usage: $0 TEXT [ROUNDS] [flags...]}
rounds=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
cli=${CHARGPT_TUI:-chargpt-tui}
work=$(mktemp -d)
steps=${STEPS:-40}
flags=(--max-iters "$steps" --eval-interval 100000 --eval-iters 2 --sample-interval 100000 "$@")

tokens_per_s() {  # from a run's metrics.jsonl: steps after the 5th, so start-up is left out
  python3 - "$1" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1] + "/config.json"))
steps = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"event": "step"' in l]
# step lines share the time of their batch; use the first and last batch boundaries after step 5
times = {}
for s in steps:
    times.setdefault(s["time_s"], []).append(s["iter"])
bounds = sorted((t, max(its)) for t, its in times.items())
bounds = [b for b in bounds if b[1] >= 5]
(t0, i0), (t1, i1) = bounds[0], bounds[-1]
print(round((i1 - i0) * cfg["train"]["batch_size"] * cfg["model"]["block_size"] / (t1 - t0), 1))
PY
}

wait_for_screen() {  # pattern, timeout seconds, poll interval (default 0.01 s)
  # Poll slowly while training is measured: each capture-pane costs CPU that training shares.
  local deadline=$((SECONDS + $2))
  until tmux capture-pane -p -t bench | grep -q -- "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "timeout waiting for $1" >&2; return 1; }
    sleep "${3:-0.01}"
  done
}

wait_gone() {  # pattern, timeout seconds
  local deadline=$((SECONDS + $2))
  while tmux capture-pane -p -t bench | grep -q -- "$1"; do
    [ $SECONDS -lt $deadline ] || { echo "timeout waiting for $1 to go" >&2; return 1; }
    sleep 0.01
  done
}

ms_until() {  # key, pattern: milliseconds from send-keys to the pattern on screen
  local start end
  start=$(date +%s%N)
  tmux send-keys -t bench "$1"
  wait_for_screen "$2" 5
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}

for round in $(seq "$rounds"); do
  "$cli" "$text" "${flags[@]}" --headless --out-dir "$work/headless-$round" > /dev/null
  echo "round $round headless tokens/s: $(tokens_per_s "$work/headless-$round")"
  tmux kill-session -t bench 2>/dev/null || true
  tmux new-session -d -s bench -x 120 -y 40 "$cli $text ${flags[*]} --out-dir $work/tui-$round"
  wait_for_screen "FINISHED" 3600 1
  echo "round $round tui tokens/s: $(tokens_per_s "$work/tui-$round")"
  tmux send-keys -t bench q
  sleep 1
  tmux kill-session -t bench 2>/dev/null || true
done

# Latency and bandwidth during a long run
tmux new-session -d -s bench -x 120 -y 40 "$cli $text --max-iters 100000 --eval-interval 100000 --eval-iters 2 $* --out-dir $work/live"
wait_for_screen "TRAINING" 120 0.5
sleep 5
: > "$work/live.bytes"
tmux pipe-pane -o -t bench "cat >> $work/live.bytes"
sleep "${BANDWIDTH_S:-60}"
tmux pipe-pane -t bench
bytes=$(stat -c %s "$work/live.bytes")
echo "bytes to the terminal while training: $bytes in ${BANDWIDTH_S:-60} s = $((bytes / ${BANDWIDTH_S:-60})) B/s"
for i in 1 2 3; do
  echo "pause key -> 'Resume' in footer: $(ms_until p 'space Resume') ms"
  wait_for_screen "PAUSED" 60
  echo "resume key -> 'Pause' in footer: $(ms_until p 'space Pause') ms"
  echo "g -> generate modal: $(ms_until g 'Generate from the model') ms"
  tmux send-keys -t bench Escape
  wait_gone "Generate from the model" 5
done
tmux send-keys -t bench C-q  # stop the run with a checkpoint, then quit (q would ask)
wait_for_screen "STOPPING\|finished at\|stopped at" 600 || true
sleep 2
tmux kill-session -t bench 2>/dev/null || true
echo "runs in $work"
