"""The transformer VAEs' Figure 5 and ELBO-gap table (issue 11): reconstruction error against the total
latent dimension dim z + dim u, and per model the test ELBO, the importance-sampled log p(x) and
KL(q || prior), to test the paper's claim that the ELBO's gap KL(q || p(z | x)) is about KL(q || prior).

    VAEZOO_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python bench/tvae_figure5.py --epochs 10 \
        [--totals 2 5 10 20 30] [--models vae tvae-affine tvae-tps dtvae-affine] [--data mnist]

The paper's setting: two ReLU layers of 256 in encoder and decoder, a localization layer of 128, a
deterministic pose (``pose_prior=none``: Delta guide, flat prior, so u adds nothing to the KL), Bernoulli
likelihood, 6 pose dimensions for the affine transformer and 18 (3x3 control points) for TPS; a total
below dim u + 1 is skipped. Reconstruction error: -E_q[log p(x | z, u)] per test image (one draw per
image over the whole test set); KL(q || prior): closed form for z; log p(x): importance sampling with
K = ``--samples`` on the first ``--eval-n`` test images, with the K-sample ELBO on the same draws;
the test ELBO after every epoch, and its flag under compare's flatness rule.
Every run is cached in ``--out`` as JSON, so the script resumes and ``--no-train`` only reports. A
run cached at fewer epochs is continued from its checkpoint to ``--epochs`` (the same Adam at a
constant rate, so the continued run is the longer run), and ``--clause-from E`` then reads the
budget-stability clause of bench/RESULTS.md (:func:`vaezoo.compare.budget.stability`) on each
entry's reconstruction error minus the ``vae``'s, paired by seed, between E epochs and ``--epochs``:

    python bench/tvae_figure5.py --epochs 20 --totals 20 30 --seeds 0 1 2 --eval-n 100 --out runs/fig5 --clause-from 10
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

import torch  # noqa: E402

from vaezoo import data, evaluation, provenance, traces, zoo  # noqa: E402
from vaezoo.compare.budget import CLAUSE_LEGEND, budgets_qualify, shown, stability, stability_shown, summarize  # noqa: E402
from vaezoo.compare.measures import convergence  # noqa: E402
from vaezoo.compare.report import code_line  # noqa: E402
from vaezoo.compare.settings import DEFAULT_FLAT as FLAT  # noqa: E402
from vaezoo.errors import RunError, VaezooError  # noqa: E402
from vaezoo.fileio import write_json  # noqa: E402
from vaezoo.inference import Trainer  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402

MODELS = ["vae", "tvae-affine", "tvae-tps", "dtvae-affine"]
POSE_DIMS = {"vae": 0, "tvae-affine": 6, "tvae-affine5": 5, "tvae-tps": 18, "dtvae-affine": 6, "dtvae-tps": 18}
NETS = dict(hidden=(256, 256), activation="relu")


def create(name, latent_dim, pose_prior="none"):
    extra = {} if name == "vae" else {"pose_prior": pose_prior}
    return zoo.create(name, data_shape=(1, 28, 28), latent_dim=latent_dim, **NETS, **extra)


@torch.no_grad()
def decompose(m, x, chunk=500):
    """Per test image: reconstruction log-likelihood log p(x | z, u) at one draw from q, and
    KL(q || prior) (closed form where registered, else the one-draw log q - log p)."""
    recon, kl = [], []
    for xb in x.split(chunk):
        guide = traces.record(m.guide, xb)
        model = traces.record(m.model, xb, replay=guide.trace)
        r = torch.zeros(xb.shape[0], dtype=xb.dtype)
        k = torch.zeros(xb.shape[0], dtype=xb.dtype)
        for name, site in model.sites.items():
            lp = traces.site_log_prob(site).reshape(xb.shape[0], -1).sum(-1)
            if site["is_observed"]:
                r += lp
                continue
            q = guide.sites[name]
            try:
                k += torch.distributions.kl_divergence(q["fn"], site["fn"]).reshape(xb.shape[0], -1).sum(-1)
            except NotImplementedError:  # the Delta pose against its flat prior: 0 - 0
                k += traces.site_log_prob(q).reshape(xb.shape[0], -1).sum(-1) - lp
        recon.append(r)
        kl.append(k)
    return torch.cat(recon), torch.cat(kl)


def run_one(name, total, seed, args, train, test):
    latent_dim = total - POSE_DIMS[name]
    out = Path(args.out) / run_name(name, total, seed, args)
    done = out / result_name(args)
    if done.exists():
        return json.loads(done.read_text())
    if args.no_train:  # only report what is cached
        return None
    torch.manual_seed(seed)
    m = create(name, latent_dim, args.pose_prior)
    done_epochs = _epochs_done(out)
    if done_epochs > args.epochs:
        raise RunError(f"{out} holds a run trained {done_epochs} epochs; expected at most --epochs {args.epochs} "
                       "to continue it, or another --out")
    # the data and the rate in the checkpoint's metadata: a run of other data or another rate is refused
    # on resume (the Trainer compares them), not continued
    trainer = Trainer(m.objective(), epochs=args.epochs, batch_size=100, lr=args.lr, seed=seed, out=out,
                      progress=False, metadata={"model": name, "latent_dim": latent_dim, "data": args.data, "lr": args.lr})
    start = time.perf_counter()
    # the test ELBO after every epoch: the flatness rule reads it; a shorter cached run is continued
    trainer.fit(train, test, resume=done_epochs > 0)
    seconds = time.perf_counter() - start
    if trainer.epoch != args.epochs:
        raise RunError(f"{out}'s checkpoint is at epoch {trainer.epoch}; expected --epochs {args.epochs}")
    curve = convergence(trainer.history, FLAT)  # a continued run's early epochs may lack a test ELBO
    m.eval()
    torch.manual_seed(seed)
    recon, kl = decompose(m, test.data)
    est = evaluation.log_marginal(m.model, m.guide, test.data[: args.eval_n], num_samples=args.samples, seed=seed)
    n = args.eval_n
    row = {
        "model": name, "pose_prior": None if name == "vae" else args.pose_prior, "total": total, "latent_dim": latent_dim, "pose_dims": POSE_DIMS[name], "seed": seed,
        "epochs": args.epochs, "train_seconds": seconds,  # of this call's epochs only, for a continued run
        "continued_from": done_epochs if 0 < done_epochs < args.epochs else None,
        "recon_error": float(-recon.mean()), "recon_error_se": float(recon.std() / len(recon) ** 0.5),
        "kl_prior": float(kl.mean()),
        "test_elbo": float((recon - kl).mean()),
        # on the first eval_n images: the K-draw ELBO, log p(x) and KL(q || prior) of the same images
        "elbo_n": float(est.elbo.mean()), "log_px_n": float(est.log_px.mean()),
        "log_px_se": float(est.log_px.std() / n ** 0.5), "kl_prior_n": float(kl[:n].mean()),
        "gap_n": float((est.log_px - est.elbo).mean()),
        "khat_above_0.7": float((est.khat > 0.7).float().mean()),
        "rise": curve["rise"], "flag": curve["flag"],  # the test ELBO over the last tenth of the epochs
        "code": provenance.source_commit(),  # a cached row outlives the code that made it
    }
    write_json(done, row)
    print(json.dumps(row), flush=True)
    return row


def _epochs_done(out: Path) -> int:
    """The epochs of the run checkpointed in ``out`` (0 when none), from its metrics.jsonl."""
    metrics = out / "metrics.jsonl"
    if not (out / "checkpoint.pt").exists() or not metrics.exists():
        return 0
    return max((json.loads(line)["epoch"] for line in metrics.read_text().splitlines() if line.strip()), default=0)


def paired(rows):
    """``{(model, total): {seed: recon error - the vae's}}`` over the seeds both have."""
    by = {(r["model"], r["total"], r["seed"]): r["recon_error"] for r in rows}
    out = {}
    for (name, total, seed), value in sorted(by.items()):
        if name != "vae" and ("vae", total, seed) in by:
            out.setdefault((name, total), {})[seed] = value - by[("vae", total, seed)]
    return out


def _flatness(row):
    if row.get("flag") is None:  # cached before the script recorded a test ELBO each epoch
        return "not recorded"
    return row["flag"] if row["rise"] is None else f"{row['rise']:+.2f} ({row['flag']})"


def run_name(name, total, seed, args):
    prior = "" if name == "vae" or args.pose_prior == "none" else f"-pose{args.pose_prior}"
    return f"{name}{prior}-total{total}-seed{seed}"


def result_name(args, epochs=None):
    return f"fig5-{args.data}-e{epochs or args.epochs}-K{args.samples}-n{args.eval_n}.json"


def cached_rows(args, epochs):
    """The cached results of ``epochs`` for the runs this command names (``--models``, ``--totals``,
    ``--seeds``), at any ``--samples`` and ``--eval-n`` (the reconstruction error reads neither)."""
    rows = []
    for seed in args.seeds:
        for total in args.totals:
            for name in args.models:
                found = sorted((Path(args.out) / run_name(name, total, seed, args)).glob(f"fig5-{args.data}-e{epochs}-K*-n*.json"))
                if found:
                    rows.append(json.loads(found[0].read_text()))
    return rows


def print_paired(rows, args):
    print(f"\nReconstruction error minus the `vae`'s, paired by seed, {args.epochs} epochs (95% t-interval over seeds):\n")
    print("| model | dim z + dim u | difference (per seed) |")
    print("| --- | ---: | --- |")
    for (name, total), d in paired(rows).items():
        print(f"| {name} | {total} | {shown(summarize(d))} |")  # one seed: the mean, no interval


def print_clause(rows, args):
    short_rows = cached_rows(args, args.clause_from)
    short, long = paired(short_rows), paired(rows)
    if not set(short) & set(long):
        sys.exit(f"tvae_figure5: no entry has cached results at both {args.clause_from} and {args.epochs} epochs "
                 f"in {args.out} (fig5-{args.data}-e{args.clause_from}-K*-n*.json); expected the shorter run's results there")
    print(f"\nBudget change {args.clause_from} -> {args.epochs} epochs of the reconstruction error minus the `vae`'s, "
          f"paired by seed ({CLAUSE_LEGEND}):\n")
    print(f"| model | dim z + dim u | at {args.clause_from} | at {args.epochs} | change | clause |")
    print("| --- | ---: | --- | --- | --- | --- |")
    for key in sorted(set(short) & set(long)):
        r = stability(short[key], long[key])
        print(f"| {key[0]} | {key[1]} | {shown(r['shorter'])} | {shown(r['longer'])} | {shown(r['change'])} | {stability_shown(r)} |")
    if not budgets_qualify(args.clause_from, args.epochs):
        print(f"\nThe clause needs the longer budget at least 5/3 of the shorter; {args.epochs} is not, so it gives no verdict here.")


def plot(rows, path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in args.models:
        rs = sorted((r for r in rows if r["model"] == name), key=lambda r: r["total"])
        if rs:
            ax.errorbar([r["total"] for r in rs], [r["recon_error"] for r in rs],
                        yerr=[2 * r["recon_error_se"] for r in rs], marker="o", capsize=3, label=name)
    ax.set_xlabel("dim z + dim u")
    ax.set_ylabel("reconstruction error, -E_q log p(x | z, u) (nats)")
    ax.set_title(f"MNIST test set ({args.data}), {args.epochs} epochs, seed {args.seeds[0]}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--totals", nargs="+", type=int, default=[2, 5, 10, 20, 30])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=500, help="importance samples K for log p(x)")
    ap.add_argument("--eval-n", type=int, default=1000, help="log p(x) on the first N test images")
    ap.add_argument("--pose-prior", default="none", choices=["none", "normal", "full-rank"],
                    help="the transformer entries' pose prior (the paper's Figure 5: none)")
    ap.add_argument("--data", default="mnist", choices=["mnist", "mnist-small"])
    ap.add_argument("--out", default="runs/tvae-fig5")
    ap.add_argument("--png", default="bench/tvae_figure5.png")
    ap.add_argument("--no-train", action="store_true", help="only report the cached runs")
    ap.add_argument("--clause-from", type=int, metavar="E",
                    help="the budget-stability clause between the cached E-epoch results and --epochs")
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(1)
    train = data.load(args.data, split="train", binarize="dynamic")
    test = data.load(args.data, split="test", binarize="fixed")
    rows = []
    for seed in args.seeds:
        for total in args.totals:
            for name in args.models:
                if total - POSE_DIMS[name] < 1:
                    continue
                try:
                    row = run_one(name, total, seed, args, train, test)
                except VaezooError as e:  # a run it must not continue: one line
                    sys.exit(f"tvae_figure5: {e}")
                if row is not None:
                    rows.append(row)
    print("\ncommand: " + " ".join(shlex.quote(a) for a in sys.argv))
    print("| model | dim z + dim u | dim z | recon error | KL(q‖prior) | test ELBO | log p(x) (IS) | gap log p(x) − ELBO | KL(q‖prior), same images | k-hat > 0.7 | test ELBO's rise over the last tenth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in sorted(rows, key=lambda r: (args.models.index(r["model"]), r["total"], r["seed"])):
        label = r["model"] + (f" (pose {r['pose_prior']})" if r.get("pose_prior") not in (None, "none") else "")
        print(f"| {label} | {r['total']} | {r['latent_dim']} | {r['recon_error']:.2f} ± {r['recon_error_se']:.2f} "
              f"| {r['kl_prior']:.2f} | {r['test_elbo']:.2f} | {r['log_px_n']:.2f} ± {r['log_px_se']:.2f} "
              f"| {r['gap_n']:.2f} | {r['kl_prior_n']:.2f} | {100 * r['khat_above_0.7']:.0f}% | {_flatness(r)} |")
    print(code_line(rows))
    print_paired(rows, args)
    if args.clause_from:
        print_clause(rows, args)
    plot(rows, args.png, args)


if __name__ == "__main__":
    main()
