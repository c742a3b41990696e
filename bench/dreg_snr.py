"""Signal-to-noise ratio of IWAE gradients, standard against DReG (Rainforth et al. 2018; Tucker et
al. 2019), on the zoo's ``iwae`` entry (the Burda MLP: 784-200-200-2x50 / 50-200-200-784, tanh).

The pair is trained briefly (``--epochs`` of mnist-small, 10,000 images dynamically binarized,
with the standard IWAE-5 gradient and Adam at 1e-3; 0 for the initialization); then on one fixed
minibatch of ``--batch`` test images each estimator's gradient of the per-datapoint bound is drawn
``--draws`` times, for every K in ``--ks``. For each parameter element, SNR = |mean| / std of its
draws; printed are the median and the mean of the SNR over the guide's (encoder) elements and over
the model's (decoder). Rainforth et al. show that the standard estimator's guide SNR falls as
O(1/sqrt(K)) while the model's rises as O(sqrt(K)); DReG's guide SNR does not fall. The model's
gradient is the same estimator in both (the standard one), so its SNR differs only by the draws.

    python bench/dreg_snr.py [--epochs 3] [--draws 200] [--ks 5,50] [--batch 16] [--seed 0] [--threads 1]
"""

import argparse
import time

import pyro
import torch

from vaezoo import data, zoo
from vaezoo.inference import IWAE, Trainer
from vaezoo.provenance import code_header


def snr(model_guide, x, k, estimator, draws, seed):
    """``{(part, stat): value}``: median and mean SNR over the guide's and the model's elements."""
    m = model_guide
    objective = IWAE(m.model, m.guide, num_particles=k, estimator=estimator)
    parts = {"guide": list(m.guide.parameters()), "model": list(m.model.parameters())}
    params = parts["guide"] + parts["model"]
    n_guide = sum(p.numel() for p in parts["guide"])
    total = sq = None
    pyro.set_rng_seed(seed)
    for _ in range(draws):
        loss, _ = objective(x)
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]).double()
        total = g if total is None else total + g
        sq = g * g if sq is None else sq + g * g
    mean = total / draws
    std = (sq / draws - mean * mean).clamp_min(0).mul(draws / (draws - 1)).sqrt()
    ok = std > 0
    ratio = mean.abs() / std
    out = {}
    for part, sl in (("guide", slice(0, n_guide)), ("model", slice(n_guide, None))):
        r = ratio[sl][ok[sl]]
        out[(part, "median")] = float(r.median())
        out[(part, "mean")] = float(r.mean())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--ks", default="5,50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the figures of bench/RESULTS.md)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    m = zoo.create("iwae", data_shape=(1, 28, 28))
    start = time.perf_counter()
    if args.epochs > 0:
        train = data.load("mnist-small", split="train", binarize="dynamic")
        Trainer(m.objective(), epochs=args.epochs, lr=1e-3, device="cpu", progress=False, seed=args.seed).fit(train)
    trained = time.perf_counter() - start
    x = data.load("mnist-small", split="test", binarize="fixed").data[: args.batch]
    m.train()
    print(f"iwae (Burda MLP) after {args.epochs} epoch(s) of mnist-small ({trained:.0f} s); {args.draws} draws of the "
          f"gradient on {args.batch} test images; SNR = |mean| / std per parameter element", flush=True)
    print(f"{'K':>4}  {'estimator':<9}  {'guide median':>12}  {'guide mean':>10}  {'model median':>12}  {'model mean':>10}  {'s':>5}")
    for k in (int(v) for v in args.ks.split(",")):
        for estimator in ("standard", "dreg"):
            t = time.perf_counter()
            r = snr(m, x, k, estimator, args.draws, args.seed + 1)
            print(f"{k:>4}  {estimator:<9}  {r['guide', 'median']:>12.4f}  {r['guide', 'mean']:>10.4f}  "
                  f"{r['model', 'median']:>12.4f}  {r['model', 'mean']:>10.4f}  {time.perf_counter() - t:>5.0f}", flush=True)
    print(f"CPU time {time.process_time():.0f} s")


if __name__ == "__main__":
    main()
