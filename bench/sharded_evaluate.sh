#!/usr/bin/env bash
# `vaezoo evaluate` in one process against two under torchrun (one thread each): wall times, and
# the per-datapoint results compared bit for bit. Usage: bash bench/sharded_evaluate.sh RUN [N] [K]
set -euo pipefail
run=$1; n=${2:-400}; k=${3:-1000}
name="eval-test-n$n-K$k-seed0"
export OMP_NUM_THREADS=1
t0=$(date +%s.%N)
vaezoo evaluate "$run" --samples "$k" --n "$n" --threads 1 --quiet > /dev/null
t1=$(date +%s.%N)
cp "$run/$name.npz" /tmp/one-process.npz
torchrun --standalone --nproc-per-node 2 -m vaezoo -- evaluate "$run" --samples "$k" --n "$n" --threads 1 --quiet > /dev/null
t2=$(date +%s.%N)
python - "$run/$name.npz" "$t0" "$t1" "$t2" <<'PY'
import sys
import numpy as np
one, two = np.load("/tmp/one-process.npz"), np.load(sys.argv[1])
t0, t1, t2 = map(float, sys.argv[2:])
same = all(np.array_equal(one[k], two[k], equal_nan=True) for k in one.files)
print(f"1 process: {t1 - t0:.1f} s; 2 processes (torchrun): {t2 - t1:.1f} s (x{(t1 - t0) / (t2 - t1):.2f}); "
      f"per-datapoint results identical: {same}")
PY
