"""vaezoo.compare.budget: the change of each figure between two budgets of one comparison, paired
by seed, checked against hand-computed values on two small leaderboards."""

import math

import numpy as np
import pytest
from scipy import stats

from vaezoo.compare.budget import SAMPLES_VS_MEANS, VERSUS_BASELINE, budget_changes, stability, stability_shown
from vaezoo.errors import ConfigError


def _cell(entry, seed, elbo, log_px, fd, status="ok"):
    return {"entry": entry, "seed": seed, "status": status, "curve": [[1, elbo - 10.0], [2, elbo]],
            "log_px": log_px, "fid": {"samples": fd, "means": 0.0}}


def _board(rows):
    return {"cells": [_cell(*r) for r in rows], "settings": {}}


SHORT = _board([("vae", 0, -100.0, -95.0, 50.0), ("vae", 1, -101.0, -96.0, 60.0), ("vae", 2, -99.0, -94.0, 55.0),
                ("rho", 0, -98.0, -94.0, 80.0), ("rho", 1, -99.5, -95.0, 90.0), ("rho", 2, -97.0, -93.5, 70.0)])
LONG = _board([("vae", 0, -99.0, -94.0, 45.0), ("vae", 1, -100.0, -95.5, 58.0), ("vae", 2, -98.5, -93.0, 52.0),
               ("rho", 0, -96.0, -92.0, 60.0), ("rho", 1, -98.5, -94.5, 75.0),
               ("rho", 2, -90.0, -90.0, 0.0, "failed")])


def _t(values):
    v = np.asarray(values)
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return v.mean(), v.mean() - half, v.mean() + half


def test_changes_are_paired_by_seed_over_finished_cells():
    out = budget_changes(SHORT, LONG, baseline="vae")
    assert list(out) == ["vae", "rho"]
    vae, rho = out["vae"], out["rho"]
    assert vae["seeds"] == [0, 1, 2] and rho["seeds"] == [0, 1]  # rho's seed 2 failed at the longer budget
    assert vae["change"]["test_elbo"]["per_seed"] == {0: 1.0, 1: 1.0, 2: 0.5}
    assert vae["change"]["log_px"]["per_seed"] == {0: 1.0, 1: 0.5, 2: 1.0}
    assert vae["change"]["fd_samples"]["per_seed"] == {0: -5.0, 1: -2.0, 2: -3.0}
    mean, low, high = _t([-5.0, -2.0, -3.0])
    s = vae["change"]["fd_samples"]
    assert (s["mean"], s["low"], s["high"]) == pytest.approx((mean, low, high), abs=1e-12)
    assert vae["versus_baseline"] == {}
    # rho's gap to the vae: log p(x) +1.0 -> +2.0 (seed 0), +1.0 -> +1.0 (seed 1); FD +30 -> +15, +30 -> +17
    assert rho["versus_baseline"]["log_px"]["per_seed"] == {0: 1.0, 1: 0.0}
    assert rho["versus_baseline"]["fd_samples"]["per_seed"] == {0: -15.0, 1: -13.0}
    mean, low, high = _t([-15.0, -13.0])
    s = rho["versus_baseline"]["fd_samples"]
    assert (s["mean"], s["low"], s["high"]) == pytest.approx((mean, low, high), abs=1e-12)


def test_one_seed_has_no_interval_and_a_missing_entry_is_refused():
    one = budget_changes(_board([("vae", 0, -100.0, -95.0, 50.0)]), _board([("vae", 0, -99.0, -94.5, 40.0)]))
    s = one["vae"]["change"]["log_px"]
    assert s["mean"] == 0.5 and math.isnan(s["low"]) and math.isnan(s["high"])
    with pytest.raises(ConfigError, match="'iwae' is not in both comparisons; expected one of vae, rho"):
        budget_changes(SHORT, LONG, entries=["iwae"])


def test_clause_on_the_difference_from_the_baseline_is_read_per_figure():
    out = budget_changes(SHORT, LONG, baseline="vae")
    assert out["vae"]["clause"] == {}
    fd = out["rho"]["clause"]["fd_samples"]  # rho's seed 2 failed at the longer budget: 2 seeds, no verdict
    assert fd["seeds"] == [0, 1] and not fd["holds"] and stability_shown(fd) == "no verdict (under 3 seeds)"
    third = _board([(*c, "ok") if len(c) == 5 else c for c in [
        ("vae", 0, -99.0, -94.0, 45.0), ("vae", 1, -100.0, -95.5, 58.0), ("vae", 2, -98.5, -93.0, 52.0),
        ("rho", 0, -96.0, -92.0, 60.0), ("rho", 1, -98.5, -94.5, 75.0), ("rho", 2, -96.0, -92.0, 40.0)]])
    out = budget_changes(SHORT, third, baseline="vae")
    # the gaps to the vae by hand: FD +30, +30, +15 -> +15, +17, -12; log p(x) +1, +1, +0.5 -> +2, +1, +1
    assert out["rho"]["clause"]["fd_samples"] == stability({0: 30.0, 1: 30.0, 2: 15.0}, {0: 15.0, 1: 17.0, 2: -12.0})
    assert out["rho"]["clause"]["log_px"] == stability({0: 1.0, 1: 1.0, 2: 0.5}, {0: 2.0, 1: 1.0, 2: 1.0})


def test_stability_holds_only_with_all_three_parts():
    held = stability({0: 2.0, 1: 2.5, 2: 3.0, 7: 9.0}, {0: 2.2, 1: 2.4, 2: 3.1})  # seed 7: shorter only
    assert held["seeds"] == [0, 1, 2]
    for key, values in (("shorter", [2.0, 2.5, 3.0]), ("longer", [2.2, 2.4, 3.1]), ("change", [0.2, -0.1, 0.1])):
        s = held[key]
        assert (s["mean"], s["low"], s["high"]) == pytest.approx(_t(values), abs=1e-12)
    assert held["holds"] and held["side"] == 1 and stability_shown(held) == "holds (above 0)"
    # the same differences read against a published size above them: below it at both budgets
    size = stability({0: 2.0, 1: 2.5, 2: 3.0}, {0: 2.2, 1: 2.4, 2: 3.1}, against=4.26)
    assert size["holds"] and size["side"] == -1 and stability_shown(size) == "holds (below +4.26)"
    # a seed whose figure is not finite at either budget is left out, not read as a failure
    assert stability({0: 2.0, 1: 2.5, 2: 3.0, 3: math.nan}, {0: 2.2, 1: 2.4, 2: 3.1, 3: 1.0}) == held
    # (b): the difference grew on every seed
    grew = stability({0: 2.0, 1: 2.5, 2: 3.0}, {0: 3.0, 1: 3.6, 2: 3.9})
    assert grew["a"] and not grew["b"] and stability_shown(grew) == "fails (b)"
    # (c): the change's interval includes 0, but its mean (-2) is larger than the difference (+1)
    shrank = stability({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.1, 1: 1.0, 2: 0.9})
    assert shrank["a"] and shrank["b"] and not shrank["c"] and stability_shown(shrank) == "fails (c)"
    # (a): above 0 at the shorter budget, below at the longer
    flipped = stability({0: 2.0, 1: 2.1, 2: 2.2}, {0: -2.0, 1: -2.1, 2: -2.2})
    assert flipped["side"] == 0 and not flipped["a"] and stability_shown(flipped) == "fails (a, b, c)"
    two = stability({0: 2.0, 1: 2.5}, {0: 2.2, 1: 2.4})  # the rule's least is 3 seeds, whatever the intervals
    assert not two["holds"] and stability_shown(two) == "no verdict (under 3 seeds)"


def test_the_sos_vae_claim_sets_the_entry_s_samples_against_the_baseline_s_means():
    """SAMPLES_VS_MEANS: the entry's sample FD minus the baseline's means' FD, by seed, at each budget;
    its change and its clause read as for any other difference."""
    def board(rows):  # (entry, seed, FD samples, FD means)
        return {"cells": [{"entry": e, "seed": s, "status": "ok", "curve": [[1, 0.0]], "log_px": None,
                           "fid": {"samples": fs, "means": fm}} for e, s, fs, fm in rows], "settings": {}}
    short = board([("beta", 0, 700.0, 650.0), ("beta", 1, 720.0, 690.0), ("beta", 2, 680.0, 640.0),
                   ("sos", 0, 500.0, 900.0), ("sos", 1, 470.0, 880.0), ("sos", 2, 520.0, 860.0)])
    long = board([("beta", 0, 600.0, 560.0), ("beta", 1, 610.0, 600.0), ("beta", 2, 590.0, 575.0),
                  ("sos", 0, 400.0, 800.0), ("sos", 1, 380.0, 790.0), ("sos", 2, 420.0, 770.0)])
    out = budget_changes(short, long, baseline="beta", versus={**VERSUS_BASELINE, **SAMPLES_VS_MEANS})
    row = out["sos"]
    # by hand: samples - the baseline's means: -150, -220, -120 -> -160, -220, -155
    assert row["versus_baseline"]["fd_samples_vs_means"]["per_seed"] == {0: -10.0, 1: 0.0, 2: -35.0}
    assert row["clause"]["fd_samples_vs_means"] == stability({0: -150.0, 1: -220.0, 2: -120.0},
                                                            {0: -160.0, 1: -220.0, 2: -155.0})
    assert row["clause"]["fd_samples_vs_means"]["holds"] and row["clause"]["fd_samples_vs_means"]["side"] == -1
    # the samples-against-samples difference is the default one, unchanged: -200, -250, -160 -> -200, -230, -170
    assert row["versus_baseline"]["fd_samples"]["per_seed"] == {0: 0.0, 1: 20.0, 2: -10.0}
    assert "fd_samples_vs_means" not in budget_changes(short, long, baseline="beta")["sos"]["versus_baseline"]


def test_a_cell_without_a_frechet_distance_gives_none_not_a_crash():
    """compare writes the reason ("n/a: not 28x28") where a cell has no FD: no figure, no crash."""
    def board(d):
        return {"cells": [{"entry": e, "seed": s, "status": "ok", "curve": [[1, -90.0 + d]], "log_px": -85.0 + d,
                           "fid": "n/a: not 28x28"} for e in ("vae", "rho") for s in range(3)], "settings": {}}
    row = budget_changes(board(0.0), board(1.0), versus={**VERSUS_BASELINE, **SAMPLES_VS_MEANS})["rho"]
    assert row["change"]["fd_samples"] is None and row["versus_baseline"]["fd_samples_vs_means"] is None
    assert row["change"]["log_px"]["per_seed"] == {0: 1.0, 1: 1.0, 2: 1.0}
