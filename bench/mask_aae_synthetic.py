"""MaskAAE on its synthetic benchmark (Mondal et al., section 5.1): for true dimension n and
capacity m, the active dimensions mask-aae finds, and the Frechet distance (computed directly on the
128-d data) of its samples against WAE-MMD's at the same m, over seeds, at a small budget.

    OMP_NUM_THREADS=1 python bench/mask_aae_synthetic.py --true-dims 4 8 --factors 2 4 --seeds 0 1 2 \
        --epochs 30 [--train 4096] [--set weight=10 ...]

The setting that finds n (bench/RESULTS.md): ``--epochs 60 --set weight=50 mask_warmup=480``.

One thread; each (n, m, seed) trains both entries from the same seed on the same data. The table at
the end is what bench/RESULTS.md would record.
"""

import argparse
import statistics
import time

import pyro
import torch

from vaezoo import data, zoo
from vaezoo.evaluation.frechet import frechet_distance
from vaezoo.inference import Trainer

NETS = {"hidden": (64, 64)}  # small networks: the budget is minutes on one CPU thread
CRITIC = {"critic_hidden": (64, 64)}


def run(name, n, m, seed, args, overrides):
    pyro.set_rng_seed(seed)
    train = data.load("synthetic", split="train", true_dim=n, num_samples=args.train)
    test = data.load("synthetic", split="test", true_dim=n, num_samples=args.test)
    extra = dict(NETS, **(CRITIC if name != "wae-mmd" else {}), **(overrides if name == "mask-aae" else {}))
    model = zoo.create(name, data_shape=(128,), latent_dim=m, **extra)
    start = time.perf_counter()
    Trainer(model.objective(), lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, dtype="float32",
            seed=seed, progress=False).fit(train)
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
    p.add_argument("--set", nargs="*", default=[], help="mask-aae config overrides, key=value")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    steps = args.epochs * (args.train // args.batch_size)
    print(f"budget: {args.epochs} epochs x {args.train // args.batch_size} steps of {args.batch_size} = {steps} steps; "
          f"mask-aae overrides {overrides or 'none'}")
    rows = []
    for n in args.true_dims:
        for f in args.factors:
            m = f * n
            found, fd_mask, fd_wae, secs = [], [], [], 0.0
            for seed in args.seeds:
                a, d, s1 = run("mask-aae", n, m, seed, args, overrides)
                _, w, s2 = run("wae-mmd", n, m, seed, args, overrides)
                found.append(a), fd_mask.append(d), fd_wae.append(w)
                secs += s1 + s2
                print(f"n={n} m={m} seed={seed}: mask-aae active {a}, FD {d:.2f} ({s1:.0f} s); wae-mmd FD {w:.2f} ({s2:.0f} s)", flush=True)
            rows.append((n, m, found, statistics.mean(fd_mask), statistics.mean(fd_wae), secs))
    print("\n| n | m | active dims found (per seed) | FD mask-aae (mean) | FD wae-mmd (mean) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, m, found, dm, dw, secs in rows:
        print(f"| {n} | {m} | {', '.join(map(str, found))} | {dm:.2f} | {dw:.2f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
