"""What a longer budget changed (:mod:`vaezoo.compare.budget`): two ``vaezoo compare`` directories
of the same entries, seeds and test points at two budgets (say 30 and 50 epochs).

    python bench/budget_change.py runs/spatial30 runs/spatial50 [--baseline vae] [--entries A B ...]

An entry that ran apart from its baseline at each budget (``bench/joined_compare.py``) is followed
by joining each budget's comparisons first:

    python bench/budget_change.py runs/lowrank30 runs/lowrank50 --join-shorter runs/spatial30 --join-longer runs/spatial50

Prints a markdown table: per entry, the change (longer minus shorter) of the final test ELBO, of
log p(x) and of the samples' Frechet distance, and of the entry's difference from the baseline in
log p(x) and sample FD; each as a 95% t-interval over the seeds both have, with the per-seed values.
A difference from the baseline that moves less than its own interval's half-width leaves the
verdict where it was. ``--samples-vs-means`` adds the entry's sample FD minus the baseline's means'
FD (the SOS-VAE's claim: its samples at least as good as the beta-VAE's means):

    python bench/budget_change.py runs/sos10 runs/sos20 --baseline beta-vae-gaussian-paper --samples-vs-means
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaezoo.compare.budget import (CLAUSE_LEGEND, MEASURES, SAMPLES_VS_MEANS, VERSUS_BASELINE, budget_changes,
                                   budgets_qualify, shown as cell, stability_shown)
from vaezoo.compare.joined import joined_board
from vaezoo.errors import ConfigError

TITLES = {"test_elbo": "test ELBO", "log_px": "log p(x)", "fd_samples": "FD samples"}
#: a difference's column title, ``{baseline}`` for the baseline's name
VERSUS_TITLES = {"log_px": "log p(x) - `{baseline}`", "fd_samples": "FD samples - `{baseline}`",
                 "fd_samples_vs_means": "FD samples - `{baseline}`'s FD means"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shorter", help="the comparison at the shorter budget")
    p.add_argument("longer", help="the same comparison at the longer budget")
    p.add_argument("--baseline", default="vae", help="the entry the differences are taken against (default vae)")
    p.add_argument("--entries", nargs="+", help="entries to show (default: every entry both have)")
    p.add_argument("--join-shorter", nargs="+", default=[], metavar="DIR",
                   help="comparisons of the shorter budget's protocol joined with it (bench/joined_compare.py)")
    p.add_argument("--join-longer", nargs="+", default=[], metavar="DIR", help="the same for the longer budget")
    p.add_argument("--samples-vs-means", action="store_true",
                   help="also the entry's sample FD minus the baseline's means' FD (the SOS-VAE's claim)")
    args = p.parse_args(argv)

    def read(d):
        path = Path(d) / "leaderboard.json"
        if not path.is_file():
            sys.exit(f"budget_change: {path} does not exist; expected a vaezoo compare directory")
        return json.loads(path.read_text())

    try:
        boards = [joined_board([read(d) for d in [main] + extra]) if extra else read(main)
                  for main, extra in ((args.shorter, args.join_shorter), (args.longer, args.join_longer))]
        versus = {**VERSUS_BASELINE, **(SAMPLES_VS_MEANS if args.samples_vs_means else {})}
        rows = budget_changes(*boards, baseline=args.baseline, entries=args.entries, versus=versus)
    except ConfigError as e:
        sys.exit(f"budget_change: {e}")
    epochs = [b["settings"].get("epochs") for b in boards]
    print(f"Budgets: {epochs[0]} -> {epochs[1]} epochs; change = longer - shorter, 95% t-interval over seeds "
          "(per seed in brackets).\n")
    titles = [VERSUS_TITLES[k].format(baseline=args.baseline) for k in versus]
    cols = [f"Δ {TITLES[k]}" for k in MEASURES] + [f"Δ of ({t})" for t in titles] + [f"clause on {t}" for t in titles]
    print("| entry | seeds | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (2 + len(cols)))
    for name, row in rows.items():
        vs = [("baseline" if name == args.baseline else cell(row["versus_baseline"].get(k))) for k in versus]
        clause = [("-" if k not in row["clause"] else stability_shown(row["clause"][k])) for k in versus]
        print(f"| `{name}` | {', '.join(map(str, row['seeds']))} | "
              + " | ".join([cell(row["change"][k]) for k in MEASURES] + vs + clause) + " |")
    print(f"\nclause, on the difference from the baseline: {CLAUSE_LEGEND}.")
    if None not in epochs and not budgets_qualify(*epochs):
        print(f"The clause needs the longer budget at least 5/3 of the shorter; {epochs[1]} is not, so it gives no verdict here.")


if __name__ == "__main__":
    main()
