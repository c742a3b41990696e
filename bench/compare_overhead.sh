#!/usr/bin/env bash
# The overhead of `vaezoo compare` over the same cells run by hand: compare trains and evaluates
# each cell with the `vaezoo train` / `vaezoo evaluate` commands it writes into the cell's log, so
# this script times compare, then replays those very commands by hand (into other directories) and
# times them, `rounds` times alternately (one thread, cells one at a time). compare also computes
# the leaderboard's measures and figures (FID, probe, I(x; z), active units), which a user working
# by hand would not: that time is reported apart, not as overhead.
# Usage: bash bench/compare_overhead.sh [EPOCHS] [SAMPLES] [ROUNDS] [MODELS...]
set -euo pipefail
epochs=${1:-20}; samples=${2:-1000}; rounds=${3:-2}; shift $(( $# < 3 ? $# : 3 ))
models=${*:-vae}
dir=$(mktemp -d /tmp/compare-overhead.XXXXXX)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for r in $(seq 1 "$rounds"); do
  out=$dir/cmp$r
  t0=$(date +%s.%N)
  vaezoo compare --models $models --dataset mnist-small --seeds 0 --epochs "$epochs" --samples "$samples" \
      --jobs 1 --out "$out" > /dev/null 2> "$dir/compare$r.err"
  t1=$(date +%s.%N)
  cells=$(sed -n 's/^compare: cells done in \([0-9.]*\) s$/\1/p' "$dir/compare$r.err")
  t2=$(date +%s.%N)
  for log in "$out"/logs/*.log; do
    sed -n 's/^\$ vaezoo //p' "$log" | while read -r line; do
      # the same command, writing into a directory of its own
      eval "vaezoo ${line//$out/$dir/hand$r}" > /dev/null
    done
  done
  t3=$(date +%s.%N)
  python - "$t0" "$t1" "$cells" "$t2" "$t3" <<'PY'
import sys
t0, t1, cells, t2, t3 = map(float, sys.argv[1:])
hand = t3 - t2
print(f"compare {t1 - t0:.1f} s wall: its cells {cells:.1f} s, its measures and report {t1 - t0 - cells:.1f} s; "
      f"the same commands by hand {hand:.1f} s; overhead of compare's cells over them {100 * (cells - hand) / hand:+.1f}%")
PY
done
rm -rf "$dir"
