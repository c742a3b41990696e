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

One thread; each (n, m, seed) trains every entry from the same seed on the same data. The tables at
the end are what bench/RESULTS.md would record: per (n, m) the active dimensions and mean FDs, then
the first entry's FD minus each other entry's, paired by seed, with a 95% t-interval over the seeds.

Read back from the printed logs (several logs of one budget are pooled, a seed twice is an error):

    python bench/mask_aae_synthetic.py --from-logs run.log [more.log ...]
    python bench/mask_aae_synthetic.py --budget-change short.log --versus long.log

The second prints, per (n, m) and entry pair, how the paired difference moved from the shorter
budget to the longer (longer minus shorter, paired by seed): the budget-stability clause of
bench/RESULTS.md reads it, since a critic's FD has no test-ELBO curve to call flat.
"""

import argparse
import re
import statistics
import time

import pyro
import torch

from vaezoo import data, zoo
from vaezoo.compare.stats import paired_over_seeds
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


# a seed's line as main() prints it: "n=4 m=8 seed=0: mask-aae active 4, FD 1.54 (40 s); mask-aae-open ..."
SEED_LINE = re.compile(r"^n=(\d+) m=(\d+) seed=(\d+): (.*)$")
PART = re.compile(r"^(\S+) active (\d+), FD ([-+0-9.eE]+|nan|inf) \((\d+) s\)$")


def read_logs(paths):
    """``{(n, m): {seed: {entry: (active, fd)}}}`` from the logs main() printed. One (n, m, seed) may
    come from several lines (entries run apart, say the mask and then the open mask); the entry seen
    first is the one the tables compare the others with. The same entry of one (n, m, seed) twice is a
    ValueError naming where both are."""
    runs, where = {}, {}
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                hit = SEED_LINE.match(line.strip())
                if not hit:
                    continue
                n, m, seed = (int(g) for g in hit.groups()[:3])
                cells = runs.setdefault((n, m), {}).setdefault(seed, {})
                for part in hit.group(4).split("; "):
                    got = PART.match(part.strip())
                    if not got:
                        raise ValueError(f"{path}:{number}: cannot read {part!r}; expected 'ENTRY active K, FD X (S s)'")
                    key = (n, m, seed, got.group(1))
                    if key in where:
                        raise ValueError(f"{got.group(1)} n={n} m={m} seed={seed} is at {where[key]} and at {path}:{number}; "
                                         "expected each once")
                    where[key] = f"{path}:{number}"
                    cells[got.group(1)] = (int(got.group(2)), float(got.group(3)))
    if not runs:
        raise ValueError(f"no seed lines in {', '.join(map(str, paths))}; expected lines like 'n=4 m=8 seed=0: ...'")
    return runs


def paired_rows(runs):
    """Per (n, m) and each entry after the first: the first entry's FD minus that entry's, paired by
    seed (:func:`vaezoo.compare.stats.paired_over_seeds`), with the first entry's active counts."""
    rows = []
    for (n, m), seeds in sorted(runs.items()):
        entries = list(next(iter(seeds.values())))
        first = entries[0]
        fd = {e: {s: cells[e][1] for s, cells in seeds.items() if e in cells} for e in entries}
        active = [seeds[s][first][0] for s in sorted(seeds) if first in seeds[s]]
        for other in entries[1:]:
            rows.append(dict(n=n, m=m, entry=first, other=other, active=active,
                             mean_entry=statistics.mean(fd[first].values()),
                             mean_other=statistics.mean(fd[other].values()),
                             diff=paired_over_seeds(fd[first], fd[other])))
    return rows


def _ci(d):
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" if len(d.per_seed) >= 2 else f"{d.mean:+.2f} (1 seed)"


def paired_table(runs):
    lines = ["| n | m | active dims (per seed) | FD first (mean) | FD other (mean) | first - other | seeds | 95% CI |",
             "| --- | --- | --- | ---: | ---: | --- | ---: | --- |"]
    for r in paired_rows(runs):
        d = r["diff"]
        within = sum(abs(a - r["n"]) <= 1 for a in r["active"])
        lines.append(f"| {r['n']} | {r['m']} | {', '.join(map(str, r['active']))} ({within} of {len(r['active'])} within 1 of n) "
                     f"| {r['mean_entry']:.2f} | {r['mean_other']:.2f} | {r['entry']} - {r['other']} | {len(d.per_seed)} | {_ci(d)} |")
    return "\n".join(lines)


def budget_change_table(short, long):
    """Per (n, m) and entry pair both budgets ran: the paired difference at each budget and its
    change (longer minus shorter), paired over the seeds both have."""
    lines = ["| n | m | pair | shorter budget | longer budget | change (longer - shorter) | seeds |",
             "| --- | --- | --- | --- | --- | --- | ---: |"]
    longer = {(r["n"], r["m"], r["other"]): r for r in paired_rows(long)}
    for r in paired_rows(short):
        other = longer.get((r["n"], r["m"], r["other"]))
        if other is None:
            continue
        a, b = r["diff"].per_seed, other["diff"].per_seed
        change = paired_over_seeds(b, a)
        lines.append(f"| {r['n']} | {r['m']} | {r['entry']} - {r['other']} | {_ci(r['diff'])} | {_ci(other['diff'])} "
                     f"| {_ci(change)} | {len(change.per_seed)} |")
    return "\n".join(lines)


def main(argv=None):
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
    p.add_argument("--from-logs", nargs="+", metavar="LOG", help="print the tables of logs this script wrote; train nothing")
    p.add_argument("--budget-change", nargs="+", metavar="LOG",
                   help="logs of the shorter budget: with --versus, print how each paired difference moved; train nothing")
    p.add_argument("--versus", nargs="+", metavar="LOG", help="logs of the longer budget (with --budget-change)")
    args = p.parse_args(argv)
    if bool(args.budget_change) != bool(args.versus):
        p.error("--budget-change and --versus go together: the shorter budget's logs and the longer's")
    if args.from_logs or args.budget_change:
        try:
            if args.from_logs:
                print(paired_table(read_logs(args.from_logs)))
            else:
                print(budget_change_table(read_logs(args.budget_change), read_logs(args.versus)))
        except (OSError, ValueError) as e:
            p.error(str(e))
        return
    torch.set_num_threads(1)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    steps = args.epochs * (args.train // args.batch_size)
    print(f"budget: {args.epochs} epochs x {args.train // args.batch_size} steps of {args.batch_size} = {steps} steps; "
          f"mask-aae* overrides {overrides or 'none'}")
    rows, runs = [], {}
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
            runs[n, m] = {seed: {k: (found[k][i], fds[k][i]) for k in args.models} for i, seed in enumerate(args.seeds)}
    head = " | ".join(f"FD {k} (mean)" for k in args.models)
    print(f"\n| n | m | active dims {args.models[0]} (per seed) | {head} | seconds |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.models) + " | --- |")
    for n, m, found, fd, secs in rows:
        cells = " | ".join(f"{fd[k]:.2f}" for k in args.models)
        print(f"| {n} | {m} | {', '.join(map(str, found[args.models[0]]))} | {cells} | {secs:.0f} |")
    if len(args.models) > 1:
        print("\n" + paired_table(runs))


if __name__ == "__main__":
    main()
