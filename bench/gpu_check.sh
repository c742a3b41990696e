#!/usr/bin/env bash
# The GPU check, in one call on a machine with a CUDA GPU and PyTorch (no network): installs the
# wheels bench/gpu_wheels.sh fetched into .whl/ (if any), runs the CUDA tests and prints the figures
# of bench/gpu_check.py (and writes them to $OUT/gpu_check.json when OUT is set). Under 8 minutes on
# an H100. Usage, from the repository root:  bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch, pyro, vaezoo; print('torch', torch.__version__, 'pyro', pyro.__version__, 'cuda', torch.cuda.is_available())" || exit 1
status=0
echo "== CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider -x -k "cuda or CUDA" tests 2>&1 | tail -15 || status=1
echo "== figures"
timeout 300 python3 bench/gpu_check.py "$@" || status=1
exit $status
