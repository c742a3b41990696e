"""vaezoo.compare.joined: an entry from one comparison against the baseline of another of the same
protocol, paired by seed, checked against hand-computed values; boards of another protocol and a
cell in two boards are refused."""

import math

import numpy as np
import pytest
from scipy import stats

from vaezoo.compare.joined import PROTOCOL, join, joined_differences
from vaezoo.errors import ConfigError

SETTINGS = {"dataset": "mnist", "epochs": 30, "eval_seed": 0, "num_test": 200, "samples": 5000,
            "train": {"batch_size": 100, "schedule": "cosine"}, "set": {}, "ais_steps": None, "ais_subset": None,
            "flat": 0.1}


def _cell(entry, seed, log_px, fd, flag="converged", status="ok"):
    return {"entry": entry, "seed": seed, "status": status, "log_px": log_px, "fid": {"samples": fd},
            "convergence": {"flag": flag}, "curve": [[1, log_px - 5.0]]}


def _board(rows, **settings):
    return {"cells": [_cell(*r) for r in rows],
            "settings": {**SETTINGS, "models": sorted({r[0] for r in rows}), "set_entry": {}, **settings}}


OLD = _board([("vae", 0, -95.0, 50.0), ("vae", 1, -96.0, 60.0), ("vae", 2, -94.0, 55.0, "rising"),
              ("mvn", 0, -97.0, 150.0)], set_entry={"vae": {"net": "conv"}}, preset="spatial-vae")
NEW = _board([("lowrank", 0, -93.0, 120.0), ("lowrank", 1, -96.5, 100.0), ("lowrank", 2, -95.0, 90.0),
              ("lowrank", 3, -90.0, 80.0, "converged", "failed")])


def _t(values):
    v = np.asarray(values)
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return v.mean(), v.mean() - half, v.mean() + half


def test_a_new_entry_is_paired_by_seed_with_the_baseline_of_another_comparison():
    out = joined_differences([OLD, NEW], baseline="vae", entries=["lowrank"])
    assert list(out) == ["vae", "lowrank"]
    assert out["vae"]["flags"] == {0: "converged", 1: "converged", 2: "rising"}
    low = out["lowrank"]
    assert low["seeds"] == [0, 1, 2]  # the failed seed-3 cell is left out
    lp, fd = low["versus_baseline"]["log_px"], low["versus_baseline"]["fd_samples"]
    assert lp["per_seed"] == {0: 2.0, 1: -0.5, 2: -1.0}
    assert fd["per_seed"] == {0: 70.0, 1: 40.0, 2: 35.0}
    assert (fd["mean"], fd["low"], fd["high"]) == pytest.approx(_t([70.0, 40.0, 35.0]), abs=1e-12)
    assert (lp["mean"], lp["low"], lp["high"]) == pytest.approx(_t([2.0, -0.5, -1.0]), abs=1e-12)
    # every entry but the baseline by default; mvn shares one seed: no interval
    both = joined_differences([OLD, NEW])
    assert list(both) == ["vae", "mvn", "lowrank"]
    assert both["mvn"]["versus_baseline"]["log_px"]["per_seed"] == {0: -2.0}
    assert math.isnan(both["mvn"]["versus_baseline"]["log_px"]["low"])


@pytest.mark.parametrize("key", PROTOCOL)
def test_boards_of_another_protocol_are_refused_naming_the_field(key):
    other = _board([("lowrank", 0, -93.0, 120.0)], **{key: "something else"})
    with pytest.raises(ConfigError, match=f'^comparison 2 has {key} "something else", comparison 1 '):
        join([OLD, other])


def test_an_entry_configured_differently_in_two_boards_is_refused():
    wide = _board([("vae", 5, -90.0, 10.0)], set_entry={"vae": {"net": "conv", "latent_dim": 784}})
    with pytest.raises(ConfigError, match='^vae has --set {"latent_dim": 784, "net": "conv"} in comparison 2, '
                                          '{"net": "conv"} in comparison 1; expected one configuration an entry$'):
        join([OLD, wide])
    assert sorted(join([OLD, _board([("vae", 5, -90.0, 10.0)], set_entry={"vae": {"net": "conv"}})])["vae"]) == [0, 1, 2, 5]


def test_a_cell_in_two_boards_and_a_missing_baseline_are_refused():
    with pytest.raises(ConfigError, match="^vae seed 1 is in two comparisons; expected each cell in one$"):
        join([OLD, _board([("vae", 1, -90.0, 10.0)], set_entry={"vae": {"net": "conv"}})])
    with pytest.raises(ConfigError, match="^baseline 'vae' has no finished cell; expected one of lowrank$"):
        joined_differences([NEW])
    with pytest.raises(ConfigError, match="^entry 'iwae' has no finished cell"):
        joined_differences([OLD, NEW], entries=["iwae"])


def test_joined_boards_follow_an_entry_across_budgets():
    """budget_changes reads a joined board like one comparison: the change of lowrank - vae from a
    shorter budget to a longer one, each budget's lowrank cells in a comparison of their own."""
    from vaezoo.compare.budget import budget_changes
    from vaezoo.compare.joined import joined_board

    old50 = _board([("vae", 0, -93.0, 45.0), ("vae", 1, -94.0, 50.0), ("vae", 2, -92.5, 52.0)], epochs=50)
    new50 = _board([("lowrank", 0, -90.0, 100.0), ("lowrank", 1, -95.0, 95.0), ("lowrank", 2, -93.0, 80.0)], epochs=50)
    shorter, longer = joined_board([OLD, NEW]), joined_board([old50, new50])
    assert shorter["settings"]["epochs"] == 30 and len(shorter["cells"]) == 7  # the failed cell left out
    row = budget_changes(shorter, longer, entries=["lowrank"])["lowrank"]
    # lowrank - vae: log p(x) (+2.0, -0.5, -1.0) at 30, (+3.0, -1.0, -0.5) at 50
    assert row["versus_baseline"]["log_px"]["per_seed"] == {0: 1.0, 1: -0.5, 2: 0.5}
    assert row["versus_baseline"]["fd_samples"]["per_seed"] == {0: -15.0, 1: 5.0, 2: -7.0}
    with pytest.raises(ConfigError, match="epochs 50, comparison 1 30"):
        joined_board([OLD, new50])
