"""Transformer VAEs at a fixed budget: (a) the linear-SVM probe of the paper's Table 1 on the posterior
mean of z (dim z = 8), next to raw pixels and PCA, over one or several training seeds; (b) samples of a
``tvae-affine5`` with a learned normal pose prior, pose at the prior mean and drawn from the prior.

    OMP_NUM_THREADS=1 python bench/tvae_probe.py --epochs 10 [--out bench/tvae_samples.png]

All inputs are the fixed binarization of ``--dataset`` (mnist-small: 10000 train / 2000 test; mnist:
60000 / 10000, from ``--data-dir`` or ``VAEZOO_DATA_DIR``); the models train on its dynamic binarization
with the paper's nets (two ReLU layers of 256, localization 128), Adam 1e-3 (or the paper's Adadelta,
``--optimizer adadelta``), batch 100, seeded by each of
``--seeds``. Probe: LinearSVC (C = 1, primal, inputs not rescaled), 9-fold stratified cross-validation
on the training set (mean and std of the fold accuracies), then fitted on the whole training set (or on
``--probe-n`` of its images, a stratified subset drawn with the seed) and scored on the test set. With
several seeds: mean ± sd over seeds of the CV mean and the test accuracy, and the paired differences
(``dtvae-affine`` minus ``tvae-affine``, each transformer entry minus the ``vae``) with 95% t-intervals
over seeds.

Full MNIST to convergence, probing the same training runs at 20, 50 and 100 epochs (``--probe-at``:
the probe runs inside a forked RNG, so the training stream is the one an unprobed run takes):

    VAEZOO_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python bench/tvae_probe.py --dataset mnist \\
        --epochs 100 --probe-at 20 50 100 --seeds S --no-figure --no-baselines     # S = 0, 1, 2

Runs longer than a sitting take ``--run-dir DIR``: each model and seed checkpoints to
``DIR/MODEL-seedS`` after every epoch, and the same command run again continues the stopped runs
exactly (the Trainer's resume: a run with another model, dataset, latent size, optimizer or rate is
refused), probing the epochs still to come and a probe the stopped sitting left unfinished (a mark
``probed-E`` in the run's directory follows each printed row); its log's "train time" counts from
the restart. Keep each sitting's log: ``--from-logs`` reads them together.

Seeds run as separate processes (one a core) are summarized together, with the paired differences
at each probed epoch and how they moved between probed epochs, by

    python bench/tvae_probe.py --from-logs seed0.log seed1.log seed2.log

Every epoch's test ELBO (the fixed binarization of the test set) is recorded, and the last table gives
each run's rise over the last tenth of the epochs, the flatness rule of ``vaezoo compare``. With the
deterministic pose (``pose_prior=none``) a transformer entry's ELBO is a density of x given the encoded
pose, so it tells whether that run has settled, not how the entries compare. The learning curves of
a ``--run-dir`` are drawn, and read by that rule and by the tenths' change (the last tenth's mean
minus the tenth before's, which reads the trend through a curve's jitter), at each ``--probe-at``
epoch (default: each run's last); a run under a constant rate, as Adadelta's, is the shorter
budget's run up to that epoch:

    python bench/tvae_probe.py --curves curves.png --run-dir DIR --probe-at 50 100 150

Measured on full MNIST (one thread, 2-core CPU shared with another job; 1 epoch, batch 100, dim z 8):
seconds per epoch vae 6.0, tvae-affine 7.4 (11 in a second run: the other job's load varies), tvae-tps
8.1, dtvae-affine 13.1 (34.6 s an epoch for the four), so a seed of the command above is about
100 x 34.6 s = 58 min of one core's training (3 seeds: 3 core-hours; the test ELBO of each epoch, one
pass over 10,000 images, not timed separately). LinearSVC on 60000 x 8 features: 1.2 s to fit, 4.8 s for
the 9-fold CV, so the z probes need no ``--probe-n`` (about 25 s a seed at each probed epoch). The
raw-pixel baseline (60000 x 784) is the slow part: 26 s to fit (1.9 s on 10000), so about 4 min with its
CV; the baselines run on the first seed only (they do not depend on training; only their folds would),
``--no-baselines`` skips them, ``--probe-n`` subsamples every probe alike. The figure's tvae-affine5 adds
``--epochs`` x about 9 s when ``--no-figure`` is left out.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.svm import LinearSVC

from vaezoo import data, traces, zoo
from vaezoo.compare.budget import CLAUSE_LEGEND, budgets_qualify, shown, stability, stability_shown
from vaezoo.compare.measures import convergence, flatness, read_metrics, tenths_change
from vaezoo.compare.settings import DEFAULT_FLAT as FLAT  # nats: the rise over the last tenth of a flat curve
from vaezoo.compare.stats import t_interval
from vaezoo.errors import CheckpointError
from vaezoo.inference import Trainer, checkpoint
from vaezoo.provenance import code_header

MODELS = ["vae", "tvae-affine", "tvae-tps", "dtvae-affine"]
#: the paper's Table 1 at dim z = 8: the 9-fold CV mean accuracy (%) of the linear SVM, by entry
PAPER_CV8 = {"vae": 87.70, "tvae-affine": 89.30, "tvae-tps": 88.42, "dtvae-affine": 93.56}
NETS = dict(hidden=(256, 256), activation="relu")


#: the paper's optimizer: Adadelta "with default hyperparameters, see Lasagne documentation" (its
#: appendix A); Lasagne's defaults are rate 1.0, rho 0.95, epsilon 1e-6 (torch's rho is 0.9)
LR = {"adam": 1e-3, "adadelta": 1.0}


def optimizer(args):
    if args.optimizer == "adadelta":
        return lambda params: torch.optim.Adadelta(params, lr=args.lr, rho=0.95, eps=1e-6)
    return "adam"


def train(name, args, train_set, seed, test_set=None, at_epochs=(), on_probe=None, **config):
    """Trains ``name``; with ``test_set`` the test ELBO of every epoch is in the history. At each epoch
    of ``at_epochs``, ``on_probe(model, epoch, record)`` runs inside a forked RNG, so probing does not
    change the training stream."""
    torch.manual_seed(seed)
    m = zoo.create(name, data_shape=(1, 28, 28), latent_dim=args.latent_dim, **NETS, **config)

    # with --run-dir, a checkpoint after every epoch: a stopped run continues where it stopped
    out = None if getattr(args, "run_dir", None) is None or on_probe is None else Path(args.run_dir) / f"{name}-seed{seed}"

    def probed(epoch):  # a probe's row is printed before this mark is written
        return out is not None and (out / f"probed-{epoch}").exists()

    def at_epoch_end(trainer, record):
        if on_probe is not None and record["epoch"] in at_epochs and not probed(record["epoch"]):
            with torch.random.fork_rng():
                on_probe(m, record["epoch"], record)
            if out is not None:
                (out / f"probed-{record['epoch']}").touch()

    def trainer_to(epochs):
        return Trainer(m.objective(), optimizer=optimizer(args), epochs=epochs, batch_size=100, lr=args.lr,
                       device="cpu", seed=seed, progress=False, on_epoch_end=at_epoch_end, out=out,
                       metadata={"model": name, "dataset": args.dataset, "latent_dim": args.latent_dim,
                                 "optimizer": args.optimizer, "lr": args.lr})

    resume = out is not None and (out / "checkpoint.pt").exists()
    start = time.perf_counter()
    if resume:  # a sitting stopped during a probe: its checkpoint holds the probed epoch, probe it now
        restored = trainer_to(checkpoint.load(out / "checkpoint.pt")["epoch"])
        history = restored.fit(train_set, test_set, resume=True)  # trains nothing: loads the checkpoint
        if history:
            at_epoch_end(restored, history[-1])
    history = trainer_to(args.epochs).fit(train_set, test_set, resume=resume)
    return m, history, time.perf_counter() - start


@torch.no_grad()
def posterior_mean_z(m, x):
    return torch.cat([traces.record(m.guide, chunk).sites["z"]["fn"].mean for chunk in x.split(500)]).numpy()


def subset(labels, n, seed):
    """The indices of a stratified random subset of ``n`` of ``labels`` (all of them, in order, if
    ``n`` is None or not smaller)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(idx)


def probe(features, labels, test_features, test_labels, seed):
    # the primal problem (more samples than features) is fast; standardizing 784 binary pixels
    # made liblinear crawl, so no input is rescaled (raw, PCA and z alike)
    svm = LinearSVC(C=1.0, dual=False, max_iter=5000)
    folds = StratifiedKFold(n_splits=9, shuffle=True, random_state=seed)
    scores = cross_val_score(svm, features, labels, cv=folds)
    test = svm.fit(features, labels).score(test_features, test_labels)
    return 100 * scores.mean(), 100 * scores.std(), 100 * test


@torch.no_grad()
def sample_figure(m, path, n=64, seed=0):
    """Left: content z ~ N(0, I) rendered with the pose at the prior mean; right: the same z with
    the pose drawn from the prior."""
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    z = torch.randn(n, m.config.latent_dim)
    prior = m.model.pose_prior
    pose = prior(z).sample((n,))  # [n, pose site size]
    at_mean = torch.sigmoid(m.model.render(z, prior.mean_pose(z).expand(n, -1)))
    drawn = torch.sigmoid(m.model.render(z, prior.pose_map(pose)))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, images, title in zip(axes, (at_mean, drawn), ("pose at the prior mean", "pose drawn from the prior")):
        grid = images.reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{m.name}, pose_prior={m.config.pose_prior}: the same z in each cell")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def interval(values):
    """``mean [low, high] (per seed)`` of paired differences over seeds, as compare's tables show it
    ("n/a" where no seed has both sides: logs of runs probed at different epochs)."""
    if len(values) == 0:
        return "n/a (no seed has both)"
    mean, low, high = t_interval(values)
    return shown({"mean": mean, "low": low, "high": high, "per_seed": dict(enumerate(values))})


def pairs_of(models):
    """The differences the paper's Table 1 reads: ``dtvae-affine`` against ``tvae-affine``, and each
    transformer entry against the ``vae``."""
    wanted = [("dtvae-affine", "tvae-affine")] + [(m, "vae") for m in models if m != "vae"]
    return [(a, b) for a, b in wanted if a in models and b in models]


def paired(rows, key, entry, baseline, seeds):
    """``{seed: entry's key minus baseline's}`` over the seeds both have."""
    by = {(r["model"], r["seed"]): r[key] for r in rows if r.get("model")}
    return {s: by[(entry, s)] - by[(baseline, s)] for s in seeds if (entry, s) in by and (baseline, s) in by}


def summary(rows, models, seeds, epoch):
    """Mean ± sd over seeds per input, and the paired differences of :func:`pairs_of` with 95%
    t-intervals over seeds, at ``epoch`` (``rows`` are that epoch's and the baselines')."""
    print(f"\nepoch {epoch}, over seeds {seeds}: mean ± sd (over seeds) of the 9-fold CV mean accuracy and of the test accuracy")
    print("| input | seeds | CV mean accuracy (%) | mean fold std (%) | test accuracy (%) | train time (s) |")
    print("| --- | ---: | --- | ---: | --- | ---: |")
    for label in dict.fromkeys(r["input"] for r in rows):
        rs = [r for r in rows if r["input"] == label]
        cv, test = [r["cv"] for r in rs], [r["test"] for r in rs]
        sd = (lambda v: f" ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else "")
        print(f"| {label} | {len(rs)} | {np.mean(cv):.2f}{sd(cv)} | {np.mean([r['cv_std'] for r in rs]):.2f} "
              f"| {np.mean(test):.2f}{sd(test)} | {np.mean([r['seconds'] for r in rs]):.0f} |")
    if not pairs_of(models):
        return
    print(f"\nepoch {epoch}: paired differences over seeds (accuracy points; 95% t-interval, per seed in brackets)")
    print("| difference | CV mean | test |")
    print("| --- | --- | --- |")
    for a, b in pairs_of(models):
        cv, test = (list(paired(rows, key, a, b, seeds).values()) for key in ("cv", "test"))
        print(f"| {a} - {b} | {interval(cv)} | {interval(test)} |")


def budget_summary(rows, models, seeds, epochs):
    """How each paired CV difference moved between probed epochs of the same runs (the budget-stability
    clause of bench/RESULTS.md): per seed, the difference at the later epoch minus at the earlier."""
    if len(epochs) < 2 or not pairs_of(models):
        return
    steps = list(zip(epochs, epochs[1:])) + ([(epochs[0], epochs[-1])] if len(epochs) > 2 else [])
    print("\nchange of each CV difference between probed epochs (later minus earlier, paired by seed; 95% t-interval)")
    print("| difference | " + " | ".join(f"{e0} -> {e1}" for e0, e1 in steps) + " |")
    print("| --- |" + " --- |" * len(steps))
    for a, b in pairs_of(models):
        cells = []
        for e0, e1 in steps:
            before, after = (paired([r for r in rows if r["epoch"] == e], "cv", a, b, seeds) for e in (e0, e1))
            cells.append(interval([after[s] - before[s] for s in seeds if s in before and s in after]))
        print(f"| {a} - {b} | " + " | ".join(cells) + " |")
    clause_table(rows, models, seeds, steps)


def clause_table(rows, models, seeds, steps):
    """The budget-stability clause of bench/RESULTS.md (:func:`vaezoo.compare.budget.stability`) on
    each CV difference between probed epochs at least 5/3 apart, against 0 (its sign) and, at dim z
    = 8, against the paper's Table 1 gap (its size)."""
    steps = [(e0, e1) for e0, e1 in steps if budgets_qualify(e0, e1)]
    if not steps:
        return
    print(f"\nbudget-stability clause on each CV difference ({CLAUSE_LEGEND})")
    print("| difference | reference | " + " | ".join(f"{e0} -> {e1}" for e0, e1 in steps) + " |")
    print("| --- | --- |" + " --- |" * len(steps))
    dims = {r["input"].rsplit("(", 1)[-1].rstrip(")") for r in rows if r.get("model")}
    for a, b in pairs_of(models):
        refs = [("0", 0.0)]
        if dims == {"8"} and a in PAPER_CV8 and b in PAPER_CV8:
            refs.append((f"the paper's {PAPER_CV8[a] - PAPER_CV8[b]:+.2f}", PAPER_CV8[a] - PAPER_CV8[b]))
        for label, against in refs:
            cells = []
            for e0, e1 in steps:
                before, after = (paired([r for r in rows if r["epoch"] == e], "cv", a, b, seeds) for e in (e0, e1))
                cells.append(stability_shown(stability(before, after, against=against)))
            print(f"| {a} - {b} | {label} | " + " | ".join(cells) + " |")


def row_line(row, elbo=None):
    """One probe row as the log shows it (and :func:`read_logs` reads it back)."""
    shown = "" if elbo is None else f"{elbo:.2f}"
    return (f"| {row['input']} | {row['seed']} | {row['epoch']} | {row['cv']:.2f} | {row['cv_std']:.2f} "
            f"| {row['test']:.2f} | {row['seconds']:.0f} | {shown} |")


def read_logs(paths):
    """The probe rows and the flatness rows this script printed to ``paths`` (one log a seed, say),
    to summarize runs made in separate processes."""
    rows, curves = [], []
    for path in paths:
        for line in open(path):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.startswith("| ") or len(cells) < 2 or not cells[1].isdigit():
                continue
            if len(cells) == 8 and (cells[2].isdigit() or cells[2] == "-"):
                label, seed, epoch, cv, cv_std, test, seconds, _ = cells
                rows.append(dict(input=label, model=None if epoch == "-" else label.rsplit(" (", 1)[0], seed=int(seed),
                                 epoch=epoch if epoch == "-" else int(epoch), cv=float(cv), cv_std=float(cv_std),
                                 test=float(test), seconds=float(seconds)))
            elif len(cells) == 5:
                model, seed, elbo, rise, flag = cells
                rise = None if rise == "-" else float(rise)
                # the flag under today's rule (older logs called a falling curve "converged")
                curves.append(dict(model=model, seed=int(seed), elbo=float(elbo), rise=rise,
                                   flag=flag if rise is None else flatness(rise, FLAT)))
    return rows, curves


def report(rows, curves, models, seeds, at, n_test):
    """The summaries at each probed epoch, their changes between epochs, and the flatness table."""
    for epoch in at:
        summary([r for r in rows if r["epoch"] in (epoch, "-")], models, seeds, epoch)
    budget_summary(rows, models, seeds, at)
    images = "all" if n_test is None else f"all {n_test}"
    print(f"\ntest ELBO (fixed binarization, {images} test images) at the last epoch, and its rise over the "
          f"last tenth of the epochs (moving by {FLAT} nats or less: flat)")
    print("| model | seed | test ELBO | rise over the last tenth | flat? |")
    print("| --- | ---: | ---: | ---: | --- |")
    for c in curves:
        rise = "-" if c["rise"] is None else f"{c['rise']:+.3f}"
        print(f"| {c['model']} | {c['seed']} | {c['elbo']:.2f} | {rise} | {c['flag']} |")


def run_curves(run_dir):
    """``{(model, seed): history}`` of the runs a ``--run-dir`` holds (``MODEL-seedS/metrics.jsonl``),
    in MODELS' order, then by seed; runs with no recorded epoch are left out."""
    found = {}
    for path in sorted(Path(run_dir).glob("*-seed*")):
        name, _, seed = path.name.rpartition("-seed")
        history = read_metrics(path)
        if seed.isdigit() and history:
            found[name, int(seed)] = history
    order = {m: i for i, m in enumerate(MODELS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][0], kv[0][1])))


def curves_table(curves, at):
    """Per run and epoch E of ``at`` it reached (``at=None``: its last epoch): the test ELBO at E, the
    best up to E and its epoch, the flatness rule read on the first E epochs, and the same trend read
    through the curve's jitter (:func:`vaezoo.compare.measures.tenths_change`: the last tenth's mean
    minus the tenth before's)."""
    lines = ["| model | seed | epoch | test ELBO | best so far (epoch) | rise over the last tenth | flat? "
             "| mean of the last tenth - the tenth before, 95% CI | jitter (sd of successive changes / sqrt 2) |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | ---: |"]
    for (name, seed), history in curves.items():
        for epoch in at or [history[-1]["epoch"]]:
            head = [r for r in history if r["epoch"] <= epoch and r.get("test_elbo") is not None]
            if not head or head[-1]["epoch"] != epoch:
                continue
            best = max(head, key=lambda r: r["test_elbo"])
            rule = convergence(head, FLAT)
            rise = "-" if rule["rise"] is None else f"{rule['rise']:+.3f}"
            trend = tenths_change(head)
            smooth = "-" if trend is None else f"{trend['change']:+.2f} [{trend['low']:+.2f}, {trend['high']:+.2f}]"
            jitter = "-" if trend is None else f"{trend['jitter']:.2f}"
            lines.append(f"| {name} | {seed} | {epoch} | {head[-1]['test_elbo']:.2f} | {best['test_elbo']:.2f} ({best['epoch']}) "
                         f"| {rise} | {rule['flag']} | {smooth} | {jitter} |")
    return "\n".join(lines)


def curves_figure(curves, at, path):
    """The test ELBO by epoch: a panel a model, a line a seed, the probed epochs marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vaezoo.fileio import atomic_writer

    models = list(dict.fromkeys(name for name, _ in curves))
    fig = Figure(figsize=(4.2 * len(models), 3.2), dpi=90)
    FigureCanvasAgg(fig)
    for i, name in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        for (model, seed), history in curves.items():
            if model == name:
                pts = [(r["epoch"], r["test_elbo"]) for r in history if r.get("test_elbo") is not None]
                ax.plot([e for e, _ in pts], [v for _, v in pts], label=f"seed {seed}", linewidth=1, marker=".",
                        markersize=2)
        for epoch in at or []:
            ax.axvline(epoch, color="grey", linewidth=0.5, linestyle=":")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if i == 0:
            ax.set_ylabel("test ELBO (nats)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_writer(Path(path)) as f:
        fig.savefig(f, format="png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-small", choices=["mnist", "mnist-small"])
    parser.add_argument("--data-dir", default=None, help="where MNIST is (default: VAEZOO_DATA_DIR, else downloaded)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--optimizer", default="adam", choices=sorted(LR),
                        help="adam (ours), or adadelta with Lasagne's defaults (the paper's)")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 for adam, 1.0 for adadelta")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--seed", type=int, default=None, help="one seed (the same as --seeds SEED)")
    parser.add_argument("--probe-n", type=int, default=None, help="fit the probes on a stratified subset of N training images")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--no-baselines", action="store_true", help="skip the raw-pixel and PCA probes")
    parser.add_argument("--no-figure", action="store_true", help="skip the tvae-affine5 samples figure")
    parser.add_argument("--probe-at", nargs="+", type=int, default=None, metavar="E",
                        help="probe after each of these epochs of the one training run (default: the last)")
    parser.add_argument("--out", default="bench/tvae_samples.png")
    parser.add_argument("--run-dir", default=None, metavar="DIR",
                        help="checkpoint every run in DIR/MODEL-seedS after each epoch; rerunning the same command "
                             "continues stopped runs (probing the epochs still to come, and one a stopped sitting left unfinished)")
    parser.add_argument("--from-logs", nargs="+", metavar="LOG",
                        help="train nothing: summarize the logs of earlier runs (one a seed, say) over their seeds")
    parser.add_argument("--curves", default=None, metavar="PNG",
                        help="train nothing: draw the test ELBO by epoch of every run in --run-dir to PNG, and print "
                             "the flatness rule and the tenths' change at each --probe-at epoch (default: each run's last)")
    args = parser.parse_args(argv)
    if args.curves:
        if args.run_dir is None:
            parser.error("--curves reads the runs of a --run-dir; expected --run-dir DIR")
        curves = run_curves(args.run_dir)
        if not curves:
            parser.error(f"--run-dir {args.run_dir}: no MODEL-seedS/metrics.jsonl with a recorded epoch")
        at = sorted(set(args.probe_at)) if args.probe_at else None
        print(curves_table(curves, at))
        curves_figure(curves, at, args.curves)
        print(f"\n{args.curves}: the test ELBO by epoch, {len(curves)} runs")
        return
    if args.from_logs:
        rows, curves = read_logs(args.from_logs)
        if not rows:
            parser.error(f"--from-logs {' '.join(args.from_logs)}: no probe rows; expected logs this script printed")
        models = [m for m in MODELS if any(r["model"] == m for r in rows)]
        seeds = sorted({r["seed"] for r in rows if r["model"]})
        report(rows, curves, models, seeds, sorted({r["epoch"] for r in rows if r["model"]}), None)
        codes = dict.fromkeys(line.split()[1] for path in args.from_logs for line in open(path) if line.startswith("code: "))
        print(f"\ncode: {', '.join(codes) if codes else 'not recorded in these logs'}")
        return
    seeds = [args.seed] if args.seed is not None else args.seeds
    args.lr = LR[args.optimizer] if args.lr is None else args.lr
    torch.set_num_threads(1)

    load = dict(data_dir=args.data_dir)
    train_set = data.load(args.dataset, split="train", binarize="dynamic", **load)
    x_train = data.load(args.dataset, split="train", binarize="fixed", **load)
    x_test = data.load(args.dataset, split="test", binarize="fixed", **load)
    y_train, y_test = x_train.targets.numpy(), x_test.targets.numpy()
    flat_train, flat_test = x_train.data.reshape(len(y_train), -1).numpy(), x_test.data.reshape(len(y_test), -1).numpy()
    print(code_header())
    print(f"{args.dataset}, fixed binarization: {len(y_train)} train / {len(y_test)} test; probes on "
          f"{args.probe_n or len(y_train)} training images; {args.epochs} epochs of batch 100, {args.optimizer} lr {args.lr}, "
          f"seeds {seeds}, 1 thread", flush=True)

    rows, curves = [], []
    at = sorted(set(args.probe_at or [args.epochs]))
    if at[0] < 1 or at[-1] > args.epochs:
        parser.error(f"--probe-at {' '.join(map(str, at))}: expected epochs between 1 and --epochs {args.epochs}")

    def add(label, model, seed, epoch, features, test_features, seconds, elbo=None):
        idx = subset(y_train, args.probe_n, seed)
        mean, std, test = probe(features[idx], y_train[idx], test_features, y_test, seed)
        rows.append(dict(input=label, model=model, seed=seed, epoch=epoch, cv=mean, cv_std=std, test=test,
                         seconds=seconds))
        print(row_line(rows[-1], elbo), flush=True)

    print("\n| input | seed | epoch | 9-fold CV mean accuracy (%) | std (%) | test accuracy (%) | train time (s) | test ELBO |")
    print("| --- | ---: | ---: | --- | --- | --- | --- | --- |")
    for seed in seeds:
        if not args.no_baselines and seed == seeds[0]:
            start = time.perf_counter()
            add("raw pixels (784)", None, seed, "-", flat_train, flat_test, time.perf_counter() - start)
            start = time.perf_counter()
            pca = PCA(args.latent_dim, random_state=seed).fit(flat_train)
            add(f"PCA ({args.latent_dim})", None, seed, "-", pca.transform(flat_train), pca.transform(flat_test),
                time.perf_counter() - start)
        for name in args.models:
            clock = {"probing": 0.0, "start": time.perf_counter()}

            def on_probe(m, epoch, record, name=name, seed=seed, clock=clock):
                begin = time.perf_counter()
                z_train, z_test = posterior_mean_z(m, x_train.data), posterior_mean_z(m, x_test.data)
                add(f"{name} ({args.latent_dim})", name, seed, epoch, z_train, z_test,
                    begin - clock["start"] - clock["probing"], record.get("test_elbo"))
                clock["probing"] += time.perf_counter() - begin

            try:
                _, history, _ = train(name, args, train_set, seed, test_set=x_test, at_epochs=at, on_probe=on_probe)
            except CheckpointError as e:  # --run-dir holds a run of other settings
                parser.error(str(e))
            curves.append(dict(model=name, seed=seed, **convergence(history, FLAT),
                               elbo=history[-1].get("test_elbo") if history else None))
    report(rows, curves, args.models, seeds, at, len(y_test))

    if args.no_figure:
        return
    m, _, seconds = train("tvae-affine5", args, train_set, seeds[0], pose_prior="normal")
    sample_figure(m, args.out, seed=seeds[0])
    scale = torch.nn.functional.softplus(m.model.pose_prior.raw_scale).detach().numpy().round(3)
    print(f"\n{args.out}: tvae-affine5, pose_prior=normal ({seconds:.0f} s); prior mean of u = (psi, log Sx, log Sy, Tx, Ty): "
          f"{m.model.pose_prior.loc.detach().numpy().round(3)}, prior std: {scale}")


if __name__ == "__main__":
    np.set_printoptions(suppress=True)
    main()
