"""``vaezoo compare``: its flags, and the command that checks every cell, runs the unfinished ones
as jobs and writes the leaderboard (or, with ``--report DIR``, only rebuilds it from the cells)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaezoo.errors import ConfigError, RunError

LAUNCHERS = ("local", "submitit", "submitit-local")
RUN_FLAGS = ("models", "dataset", "seeds", "epochs", "preset", "set", "samples", "ais_subset", "ais_steps",
             "baseline", "out", "jobs", "batch_size", "lr", "n_train", "flat", "partition", "target_elbo",
             "n_test", "schedule", "threads")


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="train and evaluate entries x seeds as cells, then a leaderboard")
    c.add_argument("--models", nargs="+", default=None, metavar="NAME", help="zoo entries (default vae iwae)")
    c.add_argument("--dataset", default=None, help="dataset (default mnist-small)")
    c.add_argument("--data-dir", default=None, help="folder holding mnist/ etc.")
    c.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S", help="training seeds (default 0 1 2)")
    c.add_argument("--epochs", type=int, default=None, help="epochs per cell (default: the preset's, else train's default)")
    c.add_argument("--preset", default=None, help="a published protocol: literature (Burda et al. 2016), rho-vae, sos-vae or spatial-vae (the paper against its baseline)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field of every entry; ENTRY:KEY=VALUE of one entry")
    c.add_argument("--batch-size", type=int, default=None, help="training batch size (default train's)")
    c.add_argument("--lr", type=float, default=None, help="learning rate (default train's)")
    c.add_argument("--n-train", type=int, default=None, help=argparse.SUPPRESS)  # tiny budgets in tests
    c.add_argument("--schedule", default=None, help="learning-rate schedule of every cell: constant (default), burda or cosine")
    c.add_argument("--samples", type=int, default=None, help="importance samples per test point (default 1000)")
    c.add_argument("--n-test", type=int, default=None, metavar="N",
                   help="score log p(x) on the first N test points (default: all)")
    c.add_argument("--ais-subset", type=int, default=None, metavar="N", help="also AIS on the first N test points")
    c.add_argument("--ais-steps", type=int, default=None, metavar="S", help="AIS steps (default 100)")
    c.add_argument("--baseline", default=None, help="entry the others are compared with (default vae, else the first)")
    c.add_argument("--flat", type=float, default=None,
                   help="nats: a test ELBO rising more over the last tenth of the epochs is 'not converged', falling more "
                        "'falling' (default 0.1)")
    c.add_argument("--target-elbo", type=float, default=None, metavar="NATS",
                   help="also report each cell's training seconds until its test ELBO first reached NATS")
    c.add_argument("--out", default=None, help="comparison directory (default runs/compare-<dataset>)")
    c.add_argument("--jobs", type=int, default=None, help="cells run at once (default 1)")
    c.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads of each cell (default: the cores this process may use divided by --jobs, "
                        "at least 1; on SLURM 4)")
    c.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="local processes, submitit on SLURM, or submitit's local executor")
    c.add_argument("--partition", default=None, help="SLURM partition for --launcher submitit")
    c.add_argument("--report", default=None, metavar="DIR", help="only rebuild DIR's leaderboard from its cells")


def cmd_compare(args) -> int:
    if args.report is not None:
        given = [f"--{k.replace('_', '-')}" for k in RUN_FLAGS if getattr(args, k) is not None]
        if given:
            raise ConfigError(f"--report DIR rebuilds the tables from the cells alone; {given[0]} was given too, "
                              "expected --report DIR alone")
        return _write_report(Path(args.report), None)
    return _compare(args)


def _write_report(out: Path, settings) -> int:
    from vaezoo.compare import report, settings as settings_mod

    settings = settings_mod.load(out) if settings is None else settings
    for path in report.write(out, settings):
        print(path)
    return 0


def _compare(args) -> int:
    import torch

    from vaezoo import runs, zoo
    from vaezoo.cli_common import count as _count
    from vaezoo.compare import cells as cells_mod, measures, settings as settings_mod

    settings = settings_mod.make(args)
    jobs = _count(args.jobs, "--jobs", 1, 1)
    threads = _count(args.threads, "--threads", 1)
    out = Path(args.out) if args.out is not None else Path("runs") / f"compare-{settings['dataset']}"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; expected a directory for the comparison")
    runs.check_not_under_file(out, "--out", "a directory path")
    # the data and every entry are checked here, before any cell runs
    first = zoo.make_config(settings["models"][0], settings_mod.entry_overrides(settings, settings["models"][0]))
    test = runs.load_split({"dataset": settings["dataset"], "config": zoo.config_dict(first), "data_dir": None},
                           "test", settings["data_dir"])
    x = test.data[:2].to(torch.float32)
    settings["num_test"] = len(test) if settings["n_test"] is None else min(settings["n_test"], len(test))
    if settings["ais_subset"] is not None:  # evaluate --n names its file by the points it scored
        settings["ais_subset"] = min(settings["ais_subset"], len(test))
    todo = []
    for name in settings["models"]:
        overrides = settings_mod.entry_overrides(settings, name)
        m = zoo.create(name, data_shape=tuple(test.data.shape[1:]), **overrides)
        deltas = measures.point_mass_sites(m, x)
        samples = 0 if measures.SITE in deltas else settings["samples"]
        ais_steps = None if deltas else settings["ais_steps"]  # AIS needs a density at every guide site
        for seed in settings["seeds"]:
            run = cells_mod.cell_dir(out, name, seed)
            cells_mod.check_cell(run, settings_mod.expected_config(settings, name, seed), settings["epochs"])
            cell = cells_mod.Cell(model=name, seed=seed, run=str(run), log=str(out / cells_mod.LOGS / f"{name}-seed{seed}.log"),
                                  epochs=settings["epochs"], dataset=settings["dataset"], overrides=overrides,
                                  train=settings["train"], samples=samples, eval_seed=settings["eval_seed"],
                                  ais_subset=settings["ais_subset"], ais_steps=ais_steps,
                                  data_dir=settings["data_dir"], num_test=settings["num_test"],
                                  n_test=settings["num_test"] if settings["n_test"] is not None else None)
            if cells_mod.plan(cell):
                todo.append(cell)
    out.mkdir(parents=True, exist_ok=True)
    settings_mod.save(out, settings)
    n = len(settings["models"]) * len(settings["seeds"])
    print(f"compare: {len(todo)} of {n} cells to train or evaluate in {out} ({args.launcher}, {jobs} at a time)",
          file=sys.stderr)
    start = time.perf_counter()
    errors = []
    if todo and args.launcher == "local":
        errors = cells_mod.run_local(todo, jobs, threads)
    elif todo:
        errors = cells_mod.run_submitit(todo, out, jobs, local=args.launcher == "submitit-local", partition=args.partition,
                                        threads=threads)
    if todo:
        print(f"compare: cells done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    _write_report(out, settings)
    if errors:
        for line in errors[1:]:
            print(f"vaezoo compare: error: {line}", file=sys.stderr)
        more = f" ({len(errors) - 1} more cells failed, above)" if len(errors) > 1 else ""
        raise RunError(errors[0] + more)
    return 0
