#!/usr/bin/env bash
# Viewers of a run, in real terminals (tmux): training speed with 0, 1 and 3 dashboards attached,
# key latency on an attached viewer (on its screen, on another viewer's, and acted on by the
# trainer), bytes written to each terminal, and how long `chargpt-tui attach` takes to show a
# run 100,000 steps long (running, and read from disk). Needs tmux. Usage:
#   benchmarks/viewers_in_tmux.sh TEXT [ROUNDS] [extra chargpt-tui flags...]
#
# Speed is compared inside one headless run, in windows of WINDOW_S seconds (default 30): no
# viewer, then one attached, then three, then none again, ROUNDS times (default 3). Separate
# runs on these shared machines drift by more than the effect measured (8% between two headless
# runs in a row); windows of one run do not. Each viewer window is compared with the mean of the
# viewer-less windows before and after it. SKIP_LONG=1 leaves out the 100,000-step run.
set -euo pipefail
text=$(realpath "${1:?usage: $0 TEXT [ROUNDS] [flags...]}")
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
cli=${CHARGPT_TUI:-chargpt-tui}
window=${WINDOW_S:-30}
work=$(mktemp -d)
cd "$work"
end_sessions() {  # every tmux session this script made, and a moment for their processes to go
  for s in v1 v2 v3 disk live; do tmux kill-session -t "$s" 2>/dev/null || true; done
  sleep 1
}
trap 'end_sessions; [ -n "${trainer:-}" ] && kill "$trainer" 2>/dev/null || true' EXIT

screen_has() { tmux capture-pane -p -t "$1" | grep -q -- "$2"; }

wait_for() {  # session, pattern, timeout s, poll s
  local deadline=$((SECONDS + $3))
  until screen_has "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || { echo "timeout waiting for '$2' on $1" >&2; return 1; }
    sleep "${4:-0.01}"
  done
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

attach() {  # session, run dir: a viewer at 120x40, once the run serves
  until [ -f "$2/server.json" ]; do sleep 0.1; done
  tmux new-session -d -s "$1" -x 120 -y 40 "$cli attach $2"
}

mark() {  # the latest whole step line of the run: "iter time_s"
  tail -n 200 speed/metrics.jsonl | python3 -c '
import json, sys
for line in reversed(sys.stdin.readlines()):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("event") == "step":
        print(r["iter"], r["time_s"]); break'
}

"$cli" "$text" --max-iters 1000000 --eval-interval 1000000 --eval-iters 2 --sample-interval 1000000 "$@" \
  --out-dir speed --headless > /dev/null &
trainer=$!
until [ -f speed/metrics.jsonl ] && grep -q '"event": "step"' speed/metrics.jsonl; do sleep 0.5; done
sleep 10
tokens=$(python3 -c 'import json; c=json.load(open("speed/config.json")); print(c["train"]["batch_size"]*c["model"]["block_size"])')
: > windows.txt
measure() {  # label: one window's tokens/s, appended to windows.txt
  local a b
  a=$(mark); sleep "$window"; b=$(mark)
  python3 -c "a='$a'.split(); b='$b'.split(); print('$1', round((int(b[0])-int(a[0]))*$tokens/(float(b[1])-float(a[1])), 1))" \
    | tee -a windows.txt
}
for round in $(seq "$rounds"); do
  measure none
  attach v1 speed; wait_for v1 TRAINING 60 0.2; sleep 3
  measure one
  attach v2 speed; attach v3 speed; wait_for v2 TRAINING 60 0.2; wait_for v3 TRAINING 60 0.2; sleep 3
  measure three
  end_sessions; sleep 2
done
measure none
python3 - <<'PY'
rows = [line.split() for line in open("windows.txt")]
for kind in ("one", "three"):
    ratios = []
    for i, (label, value) in enumerate(rows):
        if label != kind:
            continue
        before = next(float(v) for l, v in reversed(rows[:i]) if l == "none")
        after = next(float(v) for l, v in rows[i:] if l == "none")
        ratios.append(float(value) / ((before + after) / 2))
    ratios.sort()
    print(f"{kind} viewer(s): {', '.join(f'{100 * r:.1f}%' for r in ratios)} of the viewer-less windows "
          f"(median {100 * ratios[len(ratios) // 2]:.1f}%)")
PY
kill "$trainer"; wait "$trainer" || true; trainer=

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
  wait_for v2 "PAUS" 5; status=$(ms_since "$start")  # PAUSING, or PAUSED at once
  wait_for v2 "space Resume" 5; on_screen=$(ms_since "$start")
  wait_for v3 "space Resume" 5; other=$(ms_since "$start")
  wait_for v3 "PAUSED" 30; acted=$(ms_since "$start")
  echo "pause on v2: its status line ${status} ms, its footer ${on_screen} ms, v3's footer ${other} ms," \
       "paused at a step boundary ${acted} ms"
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
  time_attach() {  # what the run is: three times, from the command to the full dashboard
    for i in 1 2 3; do
      start=$(date +%s%N)
      tmux new-session -d -s disk -x 120 -y 40 "$cli attach long"
      wait_for disk "sample at step" 30
      wait_for disk "x best" 30
      echo "attach to the $1 100,000-step run, full dashboard: $(ms_since "$start") ms"
      end_sessions
    done
  }
  time_attach finished
  "$cli" --resume long/ckpt.pt --max-iters 1000000 --headless > /dev/null &
  trainer=$!
  until [ -f long/server.json ] && grep -q "$trainer" long/server.json 2>/dev/null; do sleep 0.1; done
  sleep 2
  time_attach running
  kill -TERM "$trainer"
  wait "$trainer" || true
fi
echo "runs in $work"
