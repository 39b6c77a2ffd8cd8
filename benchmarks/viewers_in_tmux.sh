#!/usr/bin/env bash
# Viewers of a run, in real terminals (tmux): training speed with 0, 1 and 3 dashboards attached,
# key latency on an attached viewer (on its screen, on another viewer's, and acted on by the
# trainer), bytes written to each terminal, and how long `chargpt-tui attach` takes to show a
# run 100,000 steps long (running, and read from disk). Needs tmux. Usage:
#   benchmarks/viewers_in_tmux.sh TEXT [ROUNDS] [extra chargpt-tui flags...]
# Defaults: the seed preset, 60 steps per speed run, 2 rounds. SKIP_LONG=1 leaves out the
# 100,000-step run (it takes a few minutes).
set -euo pipefail
text=$(realpath "${1:?usage: $0 TEXT [ROUNDS] [flags...]}")
rounds=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
cli=${CHARGPT_TUI:-chargpt-tui}
work=$(mktemp -d)
cd "$work"
steps=${STEPS:-60}
flags=(--max-iters "$steps" --eval-interval 100000 --eval-iters 2 --sample-interval 100000 "$@")
end_sessions() {  # every tmux session this script made, and a moment for their processes to go
  for s in one v1 v2 v3 disk live; do tmux kill-session -t "$s" 2>/dev/null || true; done
  sleep 1
}
trap end_sessions EXIT

tokens_per_s() {  # run dir, first step: tokens/s from metrics.jsonl over the batches after that step
  python3 - "$1" "$2" <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1] + "/config.json"))
times = {}
for line in open(sys.argv[1] + "/metrics.jsonl"):
    if '"event": "step"' in line:
        s = json.loads(line)
        times.setdefault(s["time_s"], []).append(s["iter"])
bounds = sorted((t, max(its)) for t, its in times.items() if max(its) >= int(sys.argv[2]))
(t0, i0), (t1, i1) = bounds[0], bounds[-1]
print(round((i1 - i0) * cfg["train"]["batch_size"] * cfg["model"]["block_size"] / (t1 - t0), 1))
PY
}

screen_has() { tmux capture-pane -p -t "$1" | grep -q -- "$2"; }

wait_for() {  # session, pattern, timeout s, poll s
  local deadline=$((SECONDS + $3))
  until screen_has "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || { echo "timeout waiting for '$2' on $1" >&2; return 1; }
    sleep "${4:-0.01}"
  done
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

attach() {  # session, run dir: a viewer in a new tmux window of 120x40, once the run serves
  until [ -f "$2/server.json" ]; do sleep 0.1; done
  tmux new-session -d -s "$1" -x 120 -y 40 "$cli attach $2"
}

for round in $(seq "$rounds"); do
  "$cli" "$text" "${flags[@]}" --headless --out-dir "h-$round" > /dev/null
  echo "round $round, no viewer, tokens/s: $(tokens_per_s "h-$round" 10)"

  tmux new-session -d -s one -x 120 -y 40 "$cli $text ${flags[*]} --out-dir one-$round"
  wait_for one FINISHED 3600 1
  echo "round $round, 1 viewer, tokens/s: $(tokens_per_s "one-$round" 10)"
  end_sessions

  tmux new-session -d -s v1 -x 120 -y 40 "$cli $text ${flags[*]} --out-dir three-$round"
  attach v2 "three-$round"
  attach v3 "three-$round"
  wait_for v1 FINISHED 3600 1
  echo "round $round, 3 viewers, tokens/s: $(tokens_per_s "three-$round" 10)"
  end_sessions
done

# Keys and bytes while a long run trains with three viewers
tmux new-session -d -s v1 -x 120 -y 40 "$cli $text --max-iters 100000 --eval-interval 100000 --eval-iters 2 $* --out-dir live"
attach v2 live
attach v3 live
for s in v1 v2 v3; do wait_for "$s" TRAINING 120 0.5; done
sleep 5
for s in v1 v2 v3; do : > "$s.bytes"; tmux pipe-pane -o -t "$s" "cat >> $work/$s.bytes"; done
sleep "${BANDWIDTH_S:-30}"
for s in v1 v2 v3; do
  tmux pipe-pane -t "$s"
  echo "bytes to terminal $s while training: $(( $(stat -c %s "$s.bytes") / ${BANDWIDTH_S:-30} )) B/s"
done
for i in 1 2 3; do
  start=$(date +%s%N); tmux send-keys -t v2 p
  wait_for v2 "space Resume" 5; on_screen=$(ms_since "$start")
  wait_for v3 "space Resume" 5; other=$(ms_since "$start")
  wait_for v3 "PAUSED" 30; acted=$(ms_since "$start")
  echo "pause on v2: its screen ${on_screen} ms, v3's screen ${other} ms, paused at a step boundary ${acted} ms"
  start=$(date +%s%N); tmux send-keys -t v3 p
  wait_for v3 "space Pause" 5; on_screen=$(ms_since "$start")
  wait_for v2 "TRAINING" 30; acted=$(ms_since "$start")
  echo "resume on v3: its screen ${on_screen} ms, training again on v2's ${acted} ms"
  start=$(date +%s%N); tmux send-keys -t v2 g
  wait_for v2 "Generate from the model" 5
  echo "g on v2 -> generate modal: $(ms_since "$start") ms"
  tmux send-keys -t v2 Escape
  sleep 0.5
done
echo "viewer RSS (KB): $(ps -o rss= -C chargpt-tui | tr '\n' ' ')"
tmux send-keys -t v1 C-q
sleep 3
end_sessions

if [ -z "${SKIP_LONG:-}" ]; then
  tiny=(--block-size 8 --n-embed 16 --n-layers 1 --n-heads 2 --batch-size 4 --eval-interval 5000 --eval-iters 5
        --sample-interval 5000 --sample-tokens 50 --device cpu --threads 1)
  start=$(date +%s)
  "$cli" "$text" "${tiny[@]}" --max-iters 100000 --out-dir long --headless > /dev/null
  echo "100,000 steps of a tiny model: $(( $(date +%s) - start )) s; metrics.jsonl $(stat -c %s long/metrics.jsonl) bytes"
  for i in 1 2 3; do
    start=$(date +%s%N)
    tmux new-session -d -s disk -x 120 -y 40 "$cli attach long"
    wait_for disk "sample at step" 30
    wait_for disk "x best" 30
    echo "attach to the finished 100,000-step run, full dashboard: $(ms_since "$start") ms"
    end_sessions
  done
  "$cli" --resume long/ckpt.pt --max-iters 1000000 --headless > /dev/null &
  trainer=$!
  until [ -f long/server.json ] && grep -q "$trainer" long/server.json 2>/dev/null; do sleep 0.1; done
  sleep 2
  for i in 1 2 3; do
    start=$(date +%s%N)
    tmux new-session -d -s live -x 120 -y 40 "$cli attach long"
    wait_for live "sample at step" 30
    wait_for live "x best" 30
    echo "attach to the running 100,000-step run, full dashboard: $(ms_since "$start") ms"
    end_sessions
  done
  kill -TERM "$trainer"
  wait "$trainer" || true
fi
echo "runs in $work"
