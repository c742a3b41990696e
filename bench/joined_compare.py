"""A new entry against the baseline of an earlier comparison (:mod:`vaezoo.compare.joined`): two or
more ``vaezoo compare`` directories of one protocol (dataset, epochs, training settings, test points,
estimator) whose entries differ, joined and paired by seed, so the baseline need not be retrained.

    python bench/joined_compare.py runs/spatial30 runs/lowrank30 [--baseline vae] [--entries A B ...]

Prints a markdown table: per entry, its difference from the baseline in log p(x) and in the samples'
Frechet distance (entry minus baseline, 95% t-interval over the seeds both have, per seed in
brackets), and each cell's convergence flag (the flatness rule of the comparisons).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vaezoo.compare.budget import VERSUS_BASELINE, shown
from vaezoo.compare.joined import joined_differences
from vaezoo.compare.report import code_line
from vaezoo.errors import ConfigError


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("comparisons", nargs="+", help="vaezoo compare directories of one protocol")
    p.add_argument("--baseline", default="vae", help="the entry the differences are taken against (default vae)")
    p.add_argument("--entries", nargs="+", help="entries to show (default: every entry but the baseline)")
    args = p.parse_args(argv)
    boards = []
    for d in args.comparisons:
        path = Path(d) / "leaderboard.json"
        if not path.is_file():
            sys.exit(f"joined_compare: {path} does not exist; expected a vaezoo compare directory")
        boards.append(json.loads(path.read_text()))
    try:
        rows = joined_differences(boards, baseline=args.baseline, entries=args.entries)
    except ConfigError as e:
        sys.exit(f"joined_compare: {e}")
    settings = boards[0]["settings"]
    print(f"{settings['dataset']}, {settings['epochs']} epochs, K = {settings['samples']} on {settings['num_test']} "
          f"test points; entry - `{args.baseline}`, 95% t-interval over seeds (per seed in brackets).\n")
    print("| entry | seeds | Δ log p(x) | Δ FD samples | convergence per seed |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        flags = ", ".join(f"{s}: {f}" for s, f in row["flags"].items())
        diffs = ["baseline", "baseline"] if name == args.baseline else [
            shown(row["versus_baseline"][k]) for k in VERSUS_BASELINE]
        print(f"| `{name}` | {', '.join(map(str, row['seeds']))} | {diffs[0]} | {diffs[1]} | {flags} |")
    print("\n" + code_line([c for b in boards for c in b["cells"] if c.get("entry") in rows and c.get("status") == "ok"]))


if __name__ == "__main__":
    main()
