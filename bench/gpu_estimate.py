"""What the runs this machine cannot do would cost: the papers' colour datasets (spatial VAEs on
CelebA and CIFAR-10, the SOS-VAE on CelebA), per entry, from the work of one training step counted
here and the seconds of one measured here.

    python bench/gpu_estimate.py [--rate 20] [--step-ms 10] [--threads 1]

For each (dataset, entry) of the README's "Colour images" commands and the SOS-VAE preset on CelebA:
- the floating-point operations of one training step (objective forward and backward) per image,
  counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, the
  bulk of these nets; elementwise work is not counted, so the figure is a lower bound);
- the CPU seconds per image of a training step at the run's batch, measured here (median of a few
  eager steps after one warm-up step, ``--threads`` threads), so the CPU-hours of a run are a measurement, not a guess;
- a GPU estimate, **assumed, not measured** (no GPU was lent to this project; ``bench/gpu_check.sh``
  measures a lent card): the larger of the arithmetic at an achieved ``--rate`` TFLOP/s (a small
  conv net in float32 reaches a fraction of a card's peak: an H100's float32 peak is about 67, a
  T4's 8) and the steps at ``--step-ms`` milliseconds each (these nets do so little work per step
  that a GPU step is bound by its kernel launches and the optimizer, not by arithmetic).

The SOS-VAE paper's own figure anchors the scale: 72 hours on one T4 for its CelebA model (its
Section 6), an epoch count it does not give.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from vaezoo import zoo  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402

#: dataset -> (image shape, training images)
DATA = {"celeba": ((3, 64, 64), 162_770), "cifar10": ((3, 32, 32), 50_000)}
#: the README's "Colour images" command: a normal likelihood with a learned scale, 20 epochs, batch 128
COLOUR = {"likelihood": "normal", "learn_scale": True, "binarize": None}
#: (dataset, entry, overrides, epochs, batch)
RUNS = [(d, name, {**COLOUR, **({"net": "conv"} if name == "vae" else {})}, 20, 128)
        for d in ("celeba", "cifar10")
        for name in ("vae", "spatial-vae-naive", "spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full")]
# the SOS-VAE preset's pair on CelebA (colour, 64x64; the paper's Table 1 row is grey), batch 25, per epoch
RUNS += [("celeba", name, {}, 1, 25) for name in ("beta-vae-gaussian-paper", "sos-vae-paper")]


def step(objective, x):
    loss, _ = objective(x)
    loss.backward()


def measure(name, overrides, shape, batch, steps):
    torch.manual_seed(0)
    m = zoo.create(name, data_shape=shape, **overrides)
    objective = m.objective()
    x = torch.rand((batch,) + shape)
    step(objective, x)  # warm-up (lazy buffers, first-call costs)
    counter = FlopCounterMode(display=False)
    with counter:
        step(objective, x)
    flops = counter.get_total_flops() / batch
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step(objective, x)
        seconds.append(time.perf_counter() - start)
    return flops, statistics.median(seconds) / batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20.0, help="assumed achieved TFLOP/s on a GPU")
    ap.add_argument("--step-ms", type=float, default=10.0, help="assumed milliseconds of a GPU training step at least")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per entry, at the run's batch (after one warm-up)")
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(args.threads)
    print(f"| data | entry | epochs x batch | steps | GFLOP / image (fwd+bwd) | CPU ms / image ({args.threads} thread) "
          f"| CPU-hours (measured) | GPU-hours (assumed: {args.rate:g} TFLOP/s, >= {args.step_ms:g} ms a step) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for dataset, name, overrides, epochs, batch in RUNS:
        shape, n_train = DATA[dataset]
        flops, seconds = measure(name, overrides, shape, batch, args.steps)
        images = epochs * n_train
        steps = epochs * -(-n_train // batch)
        gpu = max(images * flops / (args.rate * 1e12), steps * args.step_ms / 1e3) / 3600
        print(f"| {dataset} | `{name}` | {epochs} x {batch} | {steps:,} | {flops / 1e9:.3f} | {1e3 * seconds:.1f} "
              f"| {images * seconds / 3600:.1f} | {gpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
