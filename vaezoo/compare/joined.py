"""An entry against a baseline that ran in another comparison: two or more ``vaezoo compare``
directories of one protocol (dataset, budget, training settings, test points, estimator), whose
entries differ, joined cell by cell and paired by seed.

This spares retraining a baseline to compare a new entry with it (the spatial VAE paper's low-rank
model against the conv ``vae`` cells of an earlier comparison, say). Pairing is at the seed level:
for each seed, the entry's figure minus the baseline's (for log p(x) each cell's mean over the same
test points, so the per-seed difference is the leaderboard's), then
:func:`vaezoo.compare.stats.paired_over_seeds`. With two seeds or more that is the interval the
leaderboard gives; with one, no interval (the per-test-point arrays are not read).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional

from vaezoo.compare.budget import FIGURES, VERSUS_BASELINE
from vaezoo.compare.stats import paired_over_seeds
from vaezoo.errors import ConfigError

#: the settings two leaderboards must share to be joined (``models``, ``set_entry``, ``preset`` and
#: ``baseline`` may differ: they say which entries ran and how each was configured)
PROTOCOL = ("dataset", "epochs", "eval_seed", "num_test", "samples", "train", "set", "ais_steps", "ais_subset",
            "flat")


def _shown(value) -> str:
    return json.dumps(value, sort_keys=True)


def join(boards: List[dict]) -> Dict[str, Dict[int, dict]]:
    """``{entry: {seed: cell}}`` of the finished cells of ``boards`` (``leaderboard.json``'s
    contents). Boards of different protocols (a field of :data:`PROTOCOL`), an entry configured
    differently in two boards (``set_entry``), or a cell (entry and seed) in two boards, are a
    ConfigError naming the field, the entry or the cell."""
    if not boards:
        raise ConfigError("no comparison to join; expected two or more leaderboards")
    first = boards[0]["settings"]
    for i, board in enumerate(boards[1:], start=2):
        for key in PROTOCOL:
            a, b = first.get(key), board["settings"].get(key)
            if a != b:
                raise ConfigError(f"comparison {i} has {key} {_shown(b)}, comparison 1 {_shown(a)}; expected one "
                                  "protocol (only the entries may differ)")
    cells: Dict[str, Dict[int, dict]] = {}
    configured: Dict[str, tuple] = {}  # entry -> (its --set in the first board that ran it, that board)
    for i, board in enumerate(boards, start=1):
        for c in board["cells"]:
            mine = (board["settings"].get("set_entry") or {}).get(c["entry"], {})
            seen, where = configured.setdefault(c["entry"], (mine, i))
            if mine != seen:
                raise ConfigError(f"{c['entry']} has --set {_shown(mine)} in comparison {i}, {_shown(seen)} in "
                                  f"comparison {where}; expected one configuration an entry")
            if c.get("status") != "ok":
                continue
            seeds = cells.setdefault(c["entry"], {})
            if int(c["seed"]) in seeds:
                raise ConfigError(f"{c['entry']} seed {c['seed']} is in two comparisons; expected each cell in one")
            seeds[int(c["seed"])] = c
    return cells


def joined_board(boards: List[dict]) -> dict:
    """One leaderboard of ``boards`` (see :func:`join`, which checks them): the first one's settings
    and every finished cell, for what reads a single comparison (:func:`vaezoo.compare.budget.budget_changes`)."""
    cells = join(boards)
    return {"settings": boards[0]["settings"], "cells": [c for seeds in cells.values() for c in seeds.values()]}


def joined_differences(boards: List[dict], baseline: str = "vae",
                       entries: Optional[List[str]] = None) -> Dict[str, dict]:
    """Per entry (every entry but ``baseline``, or ``entries``): ``{"seeds", "flags",
    "versus_baseline": {figure: summary or None}}`` for the figures of
    :data:`vaezoo.compare.budget.VERSUS_BASELINE` (log p(x), sample FD), entry minus baseline (a
    summary is ``{"mean", "low", "high", "per_seed": {seed: value}, "method"}``; ``low``/``high``
    NaN with one seed), and each cell's convergence flag (``{seed: flag}``), the baseline's
    included as its own row."""
    cells = join(boards)
    if baseline not in cells:
        raise ConfigError(f"baseline {baseline!r} has no finished cell; expected one of {', '.join(sorted(cells))}")
    names = entries or [e for e in cells if e != baseline]
    for name in names:
        if name not in cells:
            raise ConfigError(f"entry {name!r} has no finished cell; expected one of {', '.join(sorted(cells))}")
    out = {}
    for name in [baseline] + [n for n in names if n != baseline]:
        row = {"seeds": sorted(cells[name]),
               "flags": {s: (c.get("convergence") or {}).get("flag") for s, c in sorted(cells[name].items())},
               "versus_baseline": {}}
        if name != baseline:
            for k, (of_entry, of_base) in VERSUS_BASELINE.items():
                figure, base_figure = FIGURES[of_entry], FIGURES[of_base]
                mine = {s: figure(c) for s, c in cells[name].items() if figure(c) is not None}
                base = {s: base_figure(c) for s, c in cells[baseline].items() if base_figure(c) is not None}
                diff = paired_over_seeds(mine, base)
                row["versus_baseline"][k] = None if diff is None else dataclasses.asdict(diff)
        out[name] = row
    return out
