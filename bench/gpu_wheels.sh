#!/usr/bin/env bash
# Run HERE (a machine with pip and PyPI), before a GPU check: downloads into .whl/ the wheels that a
# CUDA machine with PyTorch, JAX, NumPyro, scikit-learn, matplotlib and torchmetrics already
# installed but no network lacks for vaezoo (Pyro, ArviZ and what they need beyond that image).
# .whl/ is git-ignored through .git/info/exclude; bench/gpu_check.sh installs from it there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
py=${PY_VERSION:-3.12}
rm -rf .whl && mkdir -p .whl
for pkg in pyro-ppl opt_einsum arviz xarray-einstats h5netcdf platformdirs; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$pkg"
done
ls -la .whl
