"""What inductor's cache saves a compiled run: ``vaezoo train --compile`` of one entry, run as a user
runs it (separate processes), with a cache directory of its own that starts empty:

- ``cold``: seed 0, the cache empty (the program is compiled and stored);
- ``warm``: seed 1, the same entry and batch shapes (the program is loaded from the cache);
- ``off``: seed 2 with ``TORCHINDUCTOR_FX_GRAPH_CACHE=0`` and ``TORCHINDUCTOR_AUTOGRAD_CACHE=0``,
  the reference measured in the same run: what every later run cost before the step's compile was
  given the tracing context the cache needs (``vaezoo.inference.compiled._inductor_compile``). The
  graph is compiled again, but its C++ kernels, cached by their source, are not (as before).

Each row is the run's ``compile_seconds`` (capture and compile of every batch shape, from the
run's ``metrics.jsonl``) and the epoch's seconds; the ratios are warm / off and warm / cold.

    python bench/compile_cache.py [--model vae] [--dataset mnist-small] [--rounds 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vaezoo.provenance import code_header


def run(model: str, dataset: str, seed: int, out: Path, cache: Path, off: bool) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    if off:
        env.update(TORCHINDUCTOR_FX_GRAPH_CACHE="0", TORCHINDUCTOR_AUTOGRAD_CACHE="0")
    done = subprocess.run([sys.executable, "-m", "vaezoo", "train", "--model", model, "--dataset", dataset, "--epochs",
                           "1", "--compile", "--seed", str(seed), "--eval-samples", "0", "--quiet", "--out", str(out)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"vaezoo train failed:\n{done.stderr}")
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return {"compile": first["compile_seconds"], "epoch": first["seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vae")
    parser.add_argument("--dataset", default="mnist-small")
    parser.add_argument("--rounds", type=int, default=2, help="each round: a fresh cache, then cold, warm, off")
    args = parser.parse_args()
    print(code_header(), flush=True)
    rows = {"cold": [], "warm": [], "off": []}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cache = tmp / "cache"
            for kind, seed in (("cold", 0), ("warm", 1), ("off", 2)):
                rows[kind].append(run(args.model, args.dataset, seed, tmp / kind, cache, kind == "off"))
                print(f"round {r}: {kind:4s} compile {rows[kind][-1]['compile']:6.1f} s  epoch {rows[kind][-1]['epoch']:6.1f} s",
                      flush=True)
    med = {k: statistics.median(x["compile"] for x in v) for k, v in rows.items()}
    print(f"{args.model} on {args.dataset}, median compile seconds: cold {med['cold']:.1f}, warm {med['warm']:.1f}, "
          f"off {med['off']:.1f}")
    print(f"ratio warm/off: {med['warm'] / med['off']:.2f}  warm/cold: {med['warm'] / med['cold']:.2f}")


if __name__ == "__main__":
    main()
