"""Trains zoo entries on full MNIST (dynamic binarization) to a stated budget and reports the test
ELBO and the importance-sampled log p(x) on the fixed binarization of the test set (Burda et al.
2016 protocol), in nats, next to the published anchors.

    VAEZOO_DATA_DIR=../shared/data python bench/mnist_vae.py --epochs 30 --models vae iwae \
        [--seeds 0] [--samples 5000] [--out bench/runs]

Each (model, seed) is an ordinary run directory (resumable with ``vaezoo train --resume``); the
table printed at the end is what ``bench/RESULTS.md`` records.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from vaezoo import data, evaluation, runs, zoo
from vaezoo.fileio import write_json
from vaezoo.inference import Trainer
from vaezoo.provenance import code_header, source_commit

ANCHORS = {  # one stochastic layer, Burda MLP, dynamically binarized MNIST, test log p(x)
    "vae": "Burda et al. 2016: -86.76; pythae: -89.78",
    "iwae": "Burda et al. 2016 (k=50): -84.78; pythae: -86.82",
}


def write_run_config(out, m, args, seed):
    """``config.json`` as ``vaezoo train`` writes it: the directory is then an ordinary run
    (``vaezoo evaluate``, ``vaezoo sample``, ``vaezoo train --resume --out DIR``)."""
    train_cfg = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": seed, "clip_norm": None, "dtype": "float32"}
    runs.write_config(out, m, "mnist", None, train_cfg)


def run_one(name, seed, args, train, test):
    out = Path(args.out) / f"{name}-seed{seed}"
    done = out / f"bench-e{args.epochs}-K{args.samples}.json"
    if done.exists():  # trained and evaluated at this budget already (e.g. by another invocation)
        row = json.loads(done.read_text())
        print(json.dumps(row), flush=True)
        return row
    torch.manual_seed(seed)
    overrides = dict(s.split("=", 1) for s in args.set)
    m = zoo.create(name, data_shape=train.shape, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(out, m, args, seed)
    trainer = Trainer(
        m.objective(), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device, seed=seed,
        out=out, progress=False, metadata={"model": name},
    )
    resume = (out / "checkpoint.pt").exists()
    start = time.perf_counter()
    trainer.fit(train, test, resume=resume)
    train_seconds = time.perf_counter() - start
    m.eval()
    x = test.data.to(trainer.device)
    start = time.perf_counter()
    result = evaluation.log_marginal(m.model, m.guide, x, num_samples=args.samples, seed=seed)
    row = {
        "model": name,
        "seed": seed,
        "epochs": args.epochs,
        "test_elbo": trainer.history[-1]["test_elbo"],
        "log_px": float(result.log_px.mean()),
        "log_px_se": float(result.log_px.std() / result.log_px.numel() ** 0.5),
        "is_elbo": float(result.elbo.mean()),
        "gap": float((result.log_px - result.elbo).mean()),
        "khat_above_0.7": float((result.khat > 0.7).float().mean()),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "code": source_commit(),  # a cached row outlives the code that made it
    }
    write_json(done, row)
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vae", "iwae"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", nargs="*", action="extend", default=[], help="config override for every model, key=value")
    ap.add_argument("--out", default="bench/runs")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    print(code_header(), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = data.load("mnist", split="train", binarize="dynamic")
    test = data.load("mnist", split="test", binarize="fixed")
    rows = [run_one(name, seed, args, train, test) for name in args.models for seed in args.seeds]
    print()
    print(f"full MNIST, {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, K={args.samples}")
    print("| model | seeds | test ELBO | log p(x) (IS) | gap | k-hat > 0.7 | published |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        rs = [r for r in rows if r["model"] == name]
        elbo = statistics.mean(r["test_elbo"] for r in rs)
        lpx = statistics.mean(r["log_px"] for r in rs)
        spread = f" ± {statistics.stdev(r['log_px'] for r in rs):.2f} (sd over seeds)" if len(rs) > 1 else f" ± {rs[0]['log_px_se']:.2f} (se)"
        gap = statistics.mean(r["gap"] for r in rs)
        khat = statistics.mean(r["khat_above_0.7"] for r in rs)
        print(f"| {name} | {len(rs)} | {elbo:.2f} | {lpx:.2f}{spread} | {gap:.2f} | {khat:.1%} | {ANCHORS.get(name, '')} |")


if __name__ == "__main__":
    main()
