#!/usr/bin/env bash
# Text loading against the seed's way: a ~100 MB file made of TEXT repeated, read, checked and
# encoded by `chargpt-tui bench --steps 0 --gen-tokens 0` and by seed_reference.py's load(),
# alternately, each under /usr/bin/time -v (wall time and peak RSS include starting Python and
# importing torch; load_s is the loading alone, timed inside each process).
#
#   benchmarks/load_text.sh ../shared/data/tinyshakespeare.txt [ROUNDS] [MB]
set -euo pipefail
text=${1:?usage: load_text.sh TEXT [ROUNDS] [MB]}
rounds=${2:-2}
mb=${3:-100}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python - "$text" "$tmp/big.txt" "$mb" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
size = int(sys.argv[3]) * 1000 * 1000
open(sys.argv[2], "wb").write((data * (size // len(data) + 1))[:size])
PY
measure() {  # label command...
    /usr/bin/time -v "${@:2}" >"$tmp/out" 2>"$tmp/time"
    local load rss wall
    load=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["load_s"])' "$tmp/out")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tmp/time")
    printf '%-12s load_s %7s  peak RSS %8s KB  wall %s\n' "$1" "$load" "$rss" "$wall"
}
for ((r = 1; r <= rounds; r++)); do
    measure chargpt-tui chargpt-tui bench --text "$tmp/big.txt" --steps 0 --gen-tokens 0
    measure seed python "$here/seed_load.py" "$tmp/big.txt" ${SEED_REFERENCE:+"$SEED_REFERENCE"}
done
