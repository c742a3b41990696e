"""MaskAAE on its synthetic benchmark (Mondal et al., section 5.1): for true dimension n and
capacity m, the active dimensions mask-aae finds, and the Frechet distance (computed directly on the
128-d data) of its samples against its baselines' at the same m, over seeds, at a small budget.

    OMP_NUM_THREADS=1 python bench/mask_aae_synthetic.py --true-dims 4 8 --factors 2 4 --seeds 0 1 2 \
        --epochs 30 [--train 4096] [--models mask-aae mask-aae-open wae-mmd] [--set weight=10 ...]

The setting that finds n (bench/RESULTS.md): ``--epochs 60 --set weight=50 mask_warmup=480``.
The paper's training against its own baseline (the mask held open, the same critic and losses):
``--models mask-aae mask-aae-open --set training=paper``; the constraint form of the mask:
``--set mask_rule=tolerance tolerance=0.05 mask_warmup=480`` (either training). ``--set`` applies
to every mask-aae* entry alike (the open mask ignores the mask's own fields).

One thread; each (n, m, seed) trains every entry from the same seed on the same data. The table at
the end is what bench/RESULTS.md would record.
"""

import argparse
import statistics
import time

import pyro
import torch

from vaezoo import data, zoo
from vaezoo.evaluation.frechet import data_frechet_distance as frechet_distance
from vaezoo.inference import Trainer

NETS = {"hidden": (64, 64)}  # small networks: the budget is minutes on one CPU thread
CRITIC = {"critic_hidden": (64, 64)}
MODELS = ["mask-aae", "mask-aae-open", "wae-mmd"]


def run(name, n, m, seed, args, overrides):
    pyro.set_rng_seed(seed)
    train = data.load("synthetic", split="train", true_dim=n, num_samples=args.train)
    test = data.load("synthetic", split="test", true_dim=n, num_samples=args.test)
    extra = dict(NETS, **(CRITIC if name != "wae-mmd" else {}), **(overrides if name.startswith("mask-aae") else {}))
    model = zoo.create(name, data_shape=(128,), latent_dim=m, **extra)
    trace = []  # (epoch, active dimensions) every --trace-every epochs: has the mask stopped moving?

    def record(trainer, rec):
        if args.trace_every and model.model.mask is not None and trainer.epoch % args.trace_every == 0:
            trace.append(f"{trainer.epoch}:{int(model.model.mask.active())}")

    start = time.perf_counter()
    Trainer(model.objective(), lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, dtype="float32",
            seed=seed, progress=False, on_epoch_end=record).fit(train)
    if trace:
        print(f"  {name} n={n} m={m} seed={seed} active by epoch: {' '.join(trace)}", flush=True)
    seconds = time.perf_counter() - start
    torch.manual_seed(10_000 + seed)
    fd = frechet_distance(model.sample(args.test), test.data)
    active = int(model.model.mask.active()) if model.model.mask is not None else m
    return active, fd, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--true-dims", type=int, nargs="+", default=[4, 8])
    p.add_argument("--factors", type=int, nargs="+", default=[2, 4], help="capacities m = factor x n")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train", type=int, default=4096)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--models", nargs="+", default=["mask-aae", "wae-mmd"], choices=MODELS,
                   help="the first is the one whose active dimensions are tabled; mask-aae-open: the mask held open")
    p.add_argument("--set", nargs="*", default=[], help="config overrides of the mask-aae* entries, key=value")
    p.add_argument("--trace-every", type=int, default=0,
                   help="print the mask's active dimensions every this many epochs (0: at the end only)")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    steps = args.epochs * (args.train // args.batch_size)
    print(f"budget: {args.epochs} epochs x {args.train // args.batch_size} steps of {args.batch_size} = {steps} steps; "
          f"mask-aae* overrides {overrides or 'none'}")
    rows = []
    for n in args.true_dims:
        for f in args.factors:
            m = f * n
            found, fds, secs = {k: [] for k in args.models}, {k: [] for k in args.models}, 0.0
            for seed in args.seeds:
                parts = []
                for name in args.models:
                    a, d, s = run(name, n, m, seed, args, overrides)
                    found[name].append(a), fds[name].append(d)
                    secs += s
                    parts.append(f"{name} active {a}, FD {d:.2f} ({s:.0f} s)")
                print(f"n={n} m={m} seed={seed}: " + "; ".join(parts), flush=True)
            rows.append((n, m, found, {k: statistics.mean(v) for k, v in fds.items()}, secs))
    head = " | ".join(f"FD {k} (mean)" for k in args.models)
    print(f"\n| n | m | active dims {args.models[0]} (per seed) | {head} | seconds |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.models) + " | --- |")
    for n, m, found, fd, secs in rows:
        cells = " | ".join(f"{fd[k]:.2f}" for k in args.models)
        print(f"| {n} | {m} | {', '.join(map(str, found[args.models[0]]))} | {cells} | {secs:.0f} |")


if __name__ == "__main__":
    main()
