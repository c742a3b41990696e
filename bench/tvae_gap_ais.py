"""The transformer VAEs' ELBO gap with AIS (issue: the "gap is about KL(q || prior)" verdict used AIS on a
``vae`` only). For one transformer entry with a proper pose prior (``pose_prior=normal``: u and z are both
latent, so log p(x) marginalizes the pose), on the first ``--eval-n`` test images: log p(x) by importance
sampling (K = ``--samples``, the guide as proposal) and by AIS (``vaezoo.evaluation.ais``, ``--steps``
annealing distributions, ``--chains`` chains, HMC from the guide), the ELBO (the mean of the K importance
log-weights), each estimate's gap log p(x) - ELBO, KL(q || prior) (closed form, z and u), and the fraction
of images whose importance weights have Pareto k-hat > 0.7. Per-image means with standard errors over
the images; AIS - IS is paired per image.

The model is trained here (Trainer, checkpoint in ``--out``/RUN, RUN naming the entry, pose prior, total,
data, epochs and seed), or reloaded from that checkpoint when it is complete, so the estimates can be
rerun (other ``--steps``, ``--samples``) without training again.

The real run (the lead's budget; nothing below is a verdict):

    VAEZOO_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 python bench/tvae_gap_ais.py --data mnist \\
        --models tvae-affine dtvae-affine --total 20 --epochs 10 --seed 0 \\
        --eval-n 100 --samples 5000 --steps 500 --chains 16

Measured (one thread, a 2-core CPU shared with another job, so upper bounds; nets of MNIST size, dim z 14
+ dim u 6): AIS with 500 steps x 16 chains x 10 leapfrog steps takes 6.9 s per image for tvae-affine
(``--eval-n 100``: about 12 min), and 2.3 s per image at 100 steps for dtvae-affine, whose guide also
warps (about 11.7 s per image at 500 steps: about 20 min for 100 images); IS with K = 5000 takes 0.27
(tvae-affine) and 0.35 (dtvae-affine) s per image; training 10 MNIST epochs about 1.2-2 min (tvae-affine)
and 2.2 min (dtvae-affine) (seconds per epoch in ``bench/tvae_probe.py``). The command above: about
36 min of one core.
A tiny smoke run: ``--data mnist-small --epochs 1 --eval-n 10 --steps 20 --samples 500``.

``--bdmc N`` replaces the test-set estimates by BDMC (``vaezoo.evaluation.bdmc``) on N images simulated
from each trained entry: forward AIS and reverse AIS from the simulated latents sandwich log p(x*), so
the gap log p(x*) - ELBO is bounded from both sides (on simulated data, where the upper bound exists).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tvae_figure5, the shared run layout

import torch  # noqa: E402

from tvae_figure5 import POSE_DIMS, create, decompose  # noqa: E402
from vaezoo import data, evaluation  # noqa: E402
from vaezoo.fileio import write_json  # noqa: E402
from vaezoo.inference import Trainer  # noqa: E402
from vaezoo.provenance import code_header, source_commit  # noqa: E402


def trained(name, args, train):
    """The entry trained for ``args.epochs`` (resumed, or only reloaded, from its checkpoint in ``args.out``)."""
    latent_dim = args.total - POSE_DIMS[name]
    prior = "" if args.pose_prior == "none" else f"-pose{args.pose_prior}"
    out = Path(args.out) / f"{name}{prior}-total{args.total}-{args.data}-e{args.epochs}-seed{args.seed}"
    torch.manual_seed(args.seed)
    m = create(name, latent_dim, args.pose_prior)
    trainer = Trainer(m.objective(), epochs=args.epochs, batch_size=100, lr=args.lr, seed=args.seed, out=out,
                      progress=False, metadata={"model": name, "latent_dim": latent_dim})
    start = time.perf_counter()
    resume = (out / "checkpoint.pt").exists()
    trainer.fit(train, resume=resume)
    if trainer.epoch != args.epochs:
        raise SystemExit(f"{out} holds a run of {trainer.epoch} epochs, not {args.epochs}")
    m.eval()
    return m, latent_dim, out, time.perf_counter() - start


def mean_se(values: torch.Tensor):
    values = values.double()
    return float(values.mean()), float(values.std() / len(values) ** 0.5) if len(values) > 1 else float("nan")


def gap_row(name, args, train, test):
    m, latent_dim, out, train_seconds = trained(name, args, train)
    x = test.data[: args.eval_n]
    torch.manual_seed(args.seed)
    _, kl = decompose(m, x)
    start = time.perf_counter()
    imp = evaluation.log_marginal(m.model, m.guide, x, num_samples=args.samples, seed=args.seed)
    is_seconds = time.perf_counter() - start
    start = time.perf_counter()
    annealed = evaluation.ais(m.model, m.guide, x, steps=args.steps, chains=args.chains, seed=args.seed)
    ais_seconds = time.perf_counter() - start
    elbo = imp.elbo
    row = {"model": name, "pose_prior": args.pose_prior, "data": args.data, "total": args.total, "latent_dim": latent_dim,
           "seed": args.seed, "epochs": args.epochs, "eval_n": len(x), "samples": args.samples, "ais_steps": args.steps,
           "ais_chains": args.chains, "train_seconds": train_seconds,
           "is_seconds_per_image": is_seconds / len(x), "ais_seconds_per_image": ais_seconds / len(x)}
    per_image = {"log_px_is": imp.log_px, "log_px_ais": annealed.log_px, "elbo": elbo, "gap_is": imp.log_px - elbo,
                 "gap_ais": annealed.log_px - elbo, "kl_prior": kl, "ais_minus_is": annealed.log_px - imp.log_px}
    return finish(row, per_image, imp, out / f"gap-ais-{args.data}-e{args.epochs}-n{len(x)}-K{args.samples}-T{args.steps}-C{args.chains}.json")


def finish(row, per_image, imp, path):
    """The row with each per-image figure's mean and standard error and the importance weights'
    share of k-hat > 0.7, written to ``path`` and printed as one JSON line."""
    for key, values in per_image.items():
        row[key], row[key + "_se"] = mean_se(values)
    row["khat_above_0.7"] = float((imp.khat > 0.7).double().mean())
    row["code"] = source_commit()  # a cached row outlives the code that made it
    write_json(path, row)
    print(json.dumps(row), flush=True)
    return row


def bdmc_row(name, args, train):
    """BDMC on ``args.bdmc`` images simulated from the trained entry: forward AIS (a stochastic lower
    bound on log p(x*)) and reverse AIS from the simulated latents (an upper bound), so the gap
    log p(x*) - ELBO is sandwiched, not only bounded from below as on the test images."""
    m, latent_dim, out, train_seconds = trained(name, args, train)
    template = train.data[: args.bdmc].to(torch.float32)
    start = time.perf_counter()
    result = evaluation.bdmc(m.model, m.guide, template, steps=args.steps, chains=args.chains, seed=args.seed)
    bdmc_seconds = time.perf_counter() - start
    x = result.x
    torch.manual_seed(args.seed)
    _, kl = decompose(m, x)
    imp = evaluation.log_marginal(m.model, m.guide, x, num_samples=args.samples, seed=args.seed)
    elbo = imp.elbo
    row = {"kind": "bdmc", "model": name, "pose_prior": args.pose_prior, "data": args.data, "total": args.total,
           "latent_dim": latent_dim, "seed": args.seed, "epochs": args.epochs, "eval_n": len(x), "samples": args.samples,
           "ais_steps": args.steps, "ais_chains": args.chains, "bdmc_seconds_per_image": bdmc_seconds / len(x)}
    per_image = {"lower": result.log_px, "upper": result.upper, "log_px_is": imp.log_px, "elbo": elbo,
                 "gap_lower": result.log_px - elbo, "gap_upper": result.upper - elbo, "kl_prior": kl,
                 "bdmc_gap": result.upper - result.log_px}
    return finish(row, per_image, imp, out / f"gap-bdmc-{args.data}-e{args.epochs}-n{len(x)}-K{args.samples}-T{args.steps}-C{args.chains}.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tvae-affine"])
    ap.add_argument("--total", type=int, default=20, help="dim z + dim u")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pose-prior", default="normal", choices=["normal", "full-rank"],
                    help="a proper pose prior (with none, log p(x) is the content model's at the inferred pose)")
    ap.add_argument("--eval-n", type=int, default=100, help="the first N test images")
    ap.add_argument("--samples", type=int, default=5000, help="importance samples K")
    ap.add_argument("--steps", type=int, default=500, help="AIS annealing distributions")
    ap.add_argument("--chains", type=int, default=16, help="AIS chains per image")
    ap.add_argument("--data", default="mnist", choices=["mnist", "mnist-small"])
    ap.add_argument("--out", default="runs/tvae-gap")
    ap.add_argument("--bdmc", type=int, default=None, metavar="N",
                    help="instead: BDMC on N images simulated from each trained entry (the gap sandwiched)")
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(1)
    train = data.load(args.data, split="train", binarize="dynamic")
    test = data.load(args.data, split="test", binarize="fixed")
    if args.bdmc is not None:
        rows = [bdmc_row(name, args, train) for name in args.models]
        print("\ncommand: " + " ".join(shlex.quote(a) for a in sys.argv))
        print(f"BDMC on {args.bdmc} simulated images, per-image means ± se; AIS {args.steps} steps x {args.chains} chains "
              f"each way; ELBO from IS with K = {args.samples}")
        print("| model | lower (forward AIS) | upper (reverse AIS) | ELBO | gap, lower | gap, upper | KL(q‖prior) | "
              "upper gap / KL | s/image |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            cells = " | ".join(f"{r[k]:.2f} ± {r[k + '_se']:.2f}" for k in
                               ("lower", "upper", "elbo", "gap_lower", "gap_upper", "kl_prior"))
            print(f"| {r['model']} (pose {r['pose_prior']}, dim z {r['latent_dim']}) | {cells} | "
                  f"{r['gap_upper'] / r['kl_prior']:.2f} | {r['bdmc_seconds_per_image']:.1f} |")
        return
    rows = [gap_row(name, args, train, test) for name in args.models]
    print("\ncommand: " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"first {args.eval_n} test images, per-image means ± se; IS K = {args.samples}, AIS {args.steps} steps x {args.chains} chains")
    print("| model | log p(x) IS | log p(x) AIS | AIS − IS | ELBO | gap IS | gap AIS | KL(q‖prior) | k-hat > 0.7 | AIS s/image |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = " | ".join(f"{r[k]:.2f} ± {r[k + '_se']:.2f}" for k in
                           ("log_px_is", "log_px_ais", "ais_minus_is", "elbo", "gap_is", "gap_ais", "kl_prior"))
        print(f"| {r['model']} (pose {r['pose_prior']}, dim z {r['latent_dim']}) | {cells} | "
              f"{100 * r['khat_above_0.7']:.0f}% | {r['ais_seconds_per_image']:.1f} |")


if __name__ == "__main__":
    main()
