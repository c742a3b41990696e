"""MaskAAE on its synthetic benchmark (Mondal et al., section 5.1): for true dimension n and
capacity m, the active dimensions mask-aae finds, and the Frechet distance (computed directly on the
128-d data) of its samples against its baselines' at the same m, over seeds, at a small budget.

    OMP_NUM_THREADS=1 python bench/mask_aae_synthetic.py --true-dims 4 8 --factors 2 4 --seeds 0 1 2 \
        --epochs 30 [--train 4096] [--models mask-aae mask-aae-open wae-mmd] [--set weight=10 ...]

The setting that finds n at m = 2n and keeps MNIST's code (bench/RESULTS.md, the 1-nat tolerance rule):
``--epochs 120 --set weight=50 mask_warmup=480 mask_rule=tolerance tolerance=1 tolerance_unit=nats``
(the first one found, ``--epochs 60 --set weight=50 mask_warmup=480``, collapses MNIST).
The paper's training against its own baseline (the mask held open, the same critic and losses):
``--models mask-aae mask-aae-open --set training=paper``; the constraint form of the mask:
``--set mask_rule=tolerance tolerance=0.05 mask_warmup=480`` (either training). ``--set`` applies
to every mask-aae* entry alike (the open mask ignores the mask's own fields).

One thread; each (n, m, seed) trains every entry from the same seed on the same data. The tables at
the end are what bench/RESULTS.md would record: per (n, m) the active dimensions and mean FDs, then
the reference entry's FD (the first of mask-aae, mask-aae-open, wae-mmd present) minus each other
entry's, paired by seed, with a 95% t-interval over the seeds.

Read back from the printed logs (logs of one budget and one --set are pooled; an entry's seed twice,
or logs of two budgets, are refused):

    python bench/mask_aae_synthetic.py --from-logs run.log [more.log ...]
    python bench/mask_aae_synthetic.py --budget-change short.log --versus long.log

The second prints, per (n, m) and entry pair, how the paired difference moved from the shorter
budget to the longer (longer minus shorter, paired by seed): the budget-stability clause of
bench/RESULTS.md reads it, since a critic's FD has no test-ELBO curve to call flat.
"""

import argparse
import math
import re
import statistics
import time

import pyro
import torch

from vaezoo import data, zoo
from vaezoo.compare.budget import CLAUSE_LEGEND, budgets_qualify, stability, stability_shown
from vaezoo.compare.stats import paired_over_seeds, t_interval
from vaezoo.evaluation.frechet import data_frechet_distance as frechet_distance
from vaezoo.inference import Trainer
from vaezoo.provenance import code_header

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


# the lines main() prints that the tables are read back from
CODE_LINE = re.compile(r"^code: (\S+)$")
BUDGET_LINE = re.compile(r"^budget: .* = (\d+) steps; mask-aae\* overrides (.*)$")
SEED_LINE = re.compile(r"^n=(\d+) m=(\d+) seed=(\d+): (.*)$")
PART = re.compile(r"^(\S+) active (\d+), FD ([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)) \((\d+) s\)$")


class Logs(dict):
    """``{(n, m): {seed: {entry: (active, fd)}}}`` read from printed logs, with ``steps`` and
    ``overrides``, the one budget and the one set of ``--set`` values they were run with, and
    ``codes``, the commits the logs say made them (logs from before the line was printed say none)."""

    steps: int
    overrides: str
    codes: tuple = ()


def read_logs(paths):
    """The seed lines of the logs main() printed, as :class:`Logs`. One (n, m, seed) may come from
    several lines (entries run apart, say the mask and then the open mask). Logs of more than one
    budget or ``--set``, a seed line before any budget line, and the same entry of one (n, m, seed)
    twice are ValueErrors naming where."""
    runs, where, protocol, codes = Logs(), {}, {}, {}
    for path in paths:
        budget = None
        with open(path) as f:
            for number, line in enumerate(f, 1):
                here = f"{path}:{number}"
                got = CODE_LINE.match(line.strip())
                if got:
                    codes[got.group(1)] = None
                    continue
                got = BUDGET_LINE.match(line.strip())
                if got:
                    budget = (int(got.group(1)), got.group(2))
                    protocol.setdefault(budget, here)
                    if len(protocol) > 1:
                        (a, at), (b, bt) = protocol.items()
                        raise ValueError(f"{at} ran {a[0]} steps with overrides {a[1]}, {bt} {b[0]} steps with {b[1]}; "
                                         "expected logs of one budget and one --set (compare two with --budget-change)")
                    continue
                hit = SEED_LINE.match(line.strip())
                if not hit:
                    continue
                if budget is None:
                    raise ValueError(f"{here}: a seed line before any 'budget: ...' line; expected a log this script printed")
                n, m, seed = (int(g) for g in hit.groups()[:3])
                cells = runs.setdefault((n, m), {}).setdefault(seed, {})
                for part in hit.group(4).split("; "):
                    got = PART.match(part.strip())
                    if not got:
                        raise ValueError(f"{here}: cannot read {part!r}; expected 'ENTRY active K, FD X (S s)'")
                    key = (n, m, seed, got.group(1))
                    if key in where:
                        raise ValueError(f"{got.group(1)} n={n} m={m} seed={seed} is at {where[key]} and at {here}; "
                                         "expected each once")
                    where[key] = here
                    cells[got.group(1)] = (int(got.group(2)), float(got.group(3)))
    if not runs:
        raise ValueError(f"no seed lines in {', '.join(map(str, paths))}; expected lines like 'n=4 m=8 seed=0: ...'")
    (runs.steps, runs.overrides), = protocol
    runs.codes = tuple(codes)
    return runs


def reference(entries):
    """The entry the others are compared with: the first of MODELS present (the mask, then the open
    mask), so every log and budget reads the same pairs whatever order they were run in."""
    return min(entries, key=lambda e: MODELS.index(e) if e in MODELS else len(MODELS))


def paired_rows(runs):
    """Per (n, m) and each entry other than :func:`reference`: the reference's FD minus that entry's
    over the seeds where both have a finite FD (:func:`vaezoo.compare.stats.paired_over_seeds`), the
    means over those seeds, the reference's active counts on them, and the seeds left out."""
    rows = []
    for (n, m), seeds in sorted(runs.items()):
        entries = list(dict.fromkeys(e for cells in seeds.values() for e in cells))
        first = reference(entries)
        for other in (e for e in entries if e != first):
            both = [s for s in sorted(seeds) if all(e in seeds[s] for e in (first, other))]
            finite = [s for s in both if all(math.isfinite(seeds[s][e][1]) for e in (first, other))]
            if not finite:
                continue
            fd = {e: {s: seeds[s][e][1] for s in finite} for e in (first, other)}
            rows.append(dict(n=n, m=m, entry=first, other=other, seeds=finite,
                             active=[seeds[s][first][0] for s in finite],
                             mean_entry=statistics.mean(fd[first].values()), mean_other=statistics.mean(fd[other].values()),
                             diff=paired_over_seeds(fd[first], fd[other]),
                             left_out=sorted(set(seeds) - set(finite))))
    return rows


def _ci_of(values):
    """``mean [low, high]`` of per-seed values (95% t-interval), or ``mean (1 seed)``."""
    mean, low, high = t_interval(list(values))
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" if len(values) >= 2 else f"{mean:+.2f} (1 seed)"


def _ci(d):
    return _ci_of(list(d.per_seed.values()))


def _left_out(row):
    return f"; seeds {', '.join(map(str, row['left_out']))} left out (an entry or a finite FD missing)" if row["left_out"] else ""


def paired_table(runs):
    """The paired table of :func:`paired_rows` in markdown; a ValueError when no pair has a seed."""
    rows = paired_rows(runs)
    if not rows:
        raise ValueError("no (n, m) has two entries with a finite FD on one seed; expected logs of the entries to compare")
    code = f"code {', '.join(runs.codes)}" if runs.codes else "code not recorded"
    lines = [f"{runs.steps} steps, overrides {runs.overrides}; {code}. FD of the first entry minus the other's, paired "
             "by seed (negative: the first entry's samples are closer to the data); 95% t-interval over seeds.", "",
             "| n | m | first - other | seeds | active dims of the first (per seed) | FD first (mean) | FD other (mean) | 95% CI |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | --- |"]
    for r in rows:
        within = "" if r["entry"] == "mask-aae-open" else \
            f" ({sum(abs(a - r['n']) <= 1 for a in r['active'])} of {len(r['active'])} within 1 of n)"
        lines.append(f"| {r['n']} | {r['m']} | {r['entry']} - {r['other']} | {len(r['seeds'])} | "
                     f"{', '.join(map(str, r['active']))}{within} | {r['mean_entry']:.2f} | {r['mean_other']:.2f} | "
                     f"{_ci(r['diff'])}{_left_out(r)} |")
    return "\n".join(lines)


def budget_change_table(short, long):
    """Per (n, m) and pair both budgets ran, over the seeds both have: the paired difference at each
    budget and its change, longer minus shorter, paired by seed. A ValueError when the "longer"
    budget is not longer or no pair shares a seed."""
    if long.steps <= short.steps:
        raise ValueError(f"--versus logs ran {long.steps} steps, the --budget-change logs {short.steps}; "
                         "expected the longer budget after --versus")
    lines = [f"Budgets: {short.steps} -> {long.steps} steps (overrides: {short.overrides} -> {long.overrides}). "
             "Each column over the seeds both budgets have; change = longer minus shorter, paired by seed.", "",
             "| n | m | pair | seeds | shorter budget | longer budget | change (longer - shorter) | clause |",
             "| --- | --- | --- | ---: | --- | --- | --- | --- |"]
    longer = {(r["n"], r["m"], r["entry"], r["other"]): r for r in paired_rows(long)}
    for r in paired_rows(short):
        other = longer.get((r["n"], r["m"], r["entry"], r["other"]))
        shared = sorted(set(r["diff"].per_seed) & set(other["diff"].per_seed)) if other else []
        if not shared:
            continue
        a, b = ([d.per_seed[s] for s in shared] for d in (r["diff"], other["diff"]))
        clause = stability_shown(stability(dict(zip(shared, a)), dict(zip(shared, b))))
        lines.append(f"| {r['n']} | {r['m']} | {r['entry']} - {r['other']} | {len(shared)} | {_ci_of(a)} | {_ci_of(b)} "
                     f"| {_ci_of([y - x for x, y in zip(a, b)])} | {clause} |")
    if len(lines) == 4:
        raise ValueError("the two budgets share no (n, m, pair, seed); expected the same settings and seeds at both")
    note = f"clause, on the paired difference: {CLAUSE_LEGEND}"
    if not budgets_qualify(short.steps, long.steps):
        note += f"; it needs the longer budget at least 5/3 of the shorter, and {long.steps} steps is not, so it gives no verdict here"
    return "\n".join(lines + ["", note + "."])


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
    p.add_argument("--set", nargs="*", action="extend", default=[], help="config overrides of the mask-aae* entries, key=value")
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
    print(code_header())
    code = code_header().removeprefix("code: ")  # the commit alone, as the logs read back give it
    print(f"budget: {args.epochs} epochs x {args.train // args.batch_size} steps of {args.batch_size} = {steps} steps; "
          f"mask-aae* overrides {overrides or 'none'}")
    rows, runs = [], Logs()
    runs.steps, runs.overrides, runs.codes = steps, str(overrides or 'none'), (code,)
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
