"""``bench/mask_aae_synthetic.py --from-logs`` and ``--budget-change``: the seed lines the script
prints are read back as printed (entries run apart are joined by seed), and the paired differences
and their change between budgets are the ones computed by hand from the same numbers."""

import numpy as np
import pytest
from scipy import stats

from vaezoo.compare.budget import stability, stability_shown

# FD per (budget, entry, seed) at n = 4, m = 8; the mask's active dimensions are 4, 5, 3
FD = {
    (1920, "mask-aae"): [1.5, 2.0, 2.6], (1920, "mask-aae-open"): [2.5, 2.1, 3.0],
    (3840, "mask-aae"): [1.2, 1.9, 2.0], (3840, "mask-aae-open"): [2.4, 2.3, 2.1],
}
ACTIVE = [4, 5, 3]


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("mask_aae_synthetic")


def write_log(path, budget, together=True, order=("mask-aae", "mask-aae-open"), overrides="none", code=None):
    """A log as main() prints it: both entries on one line a seed, or (together=False) two runs
    of one entry each, one after the other, as when the open mask was run later."""
    lines = [f"code: {code}"] if code else []
    lines += [f"budget: {budget // 16} epochs x 16 steps of 256 = {budget} steps; mask-aae* overrides {overrides}"]

    def part(entry, seed):
        active = ACTIVE[seed] if entry == "mask-aae" else 8
        return f"{entry} active {active}, FD {FD[budget, entry][seed]:.2f} (40 s)"

    if together:
        for seed in range(3):
            lines += [f"  mask-aae n=4 m=8 seed={seed} active by epoch: 12:8 24:6",
                      f"n=4 m=8 seed={seed}: " + "; ".join(part(e, seed) for e in order)]
    else:
        for entry in order:
            lines += [f"n=4 m=8 seed={seed}: {part(entry, seed)}" for seed in range(3)]
            lines += ["", "| n | m | active dims mask-aae (per seed) | FD mask-aae (mean) | seconds |", ""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def interval(values):
    values = np.asarray(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


@pytest.mark.parametrize("together", [True, False])
def test_read_logs_joins_the_entries_of_a_seed(bench, tmp_path, together):
    runs = bench.read_logs([write_log(tmp_path / "a.log", 1920, together)])
    assert list(runs) == [(4, 8)]
    assert runs[4, 8][1] == {"mask-aae": (5, 2.0), "mask-aae-open": (8, 2.1)}
    assert list(runs[4, 8][0]) == ["mask-aae", "mask-aae-open"]  # the entry seen first is compared with the others


def test_paired_rows_are_the_differences_by_hand(bench, tmp_path):
    (row,) = bench.paired_rows(bench.read_logs([write_log(tmp_path / "a.log", 1920)]))
    d = np.subtract(FD[1920, "mask-aae"], FD[1920, "mask-aae-open"])
    mean, low, high = interval(d)
    assert (row["entry"], row["other"], row["active"]) == ("mask-aae", "mask-aae-open", ACTIVE)
    assert row["diff"].mean == pytest.approx(mean) and row["diff"].low == pytest.approx(low)
    assert row["diff"].high == pytest.approx(high)
    assert row["mean_entry"] == pytest.approx(np.mean(FD[1920, "mask-aae"]))
    table = bench.paired_table(bench.read_logs([write_log(tmp_path / "a.log", 1920)]))
    assert (f"| 4 | 8 | mask-aae - mask-aae-open | 3 | 4, 5, 3 (3 of 3 within 1 of n) | {np.mean(FD[1920, 'mask-aae']):.2f} "
            f"| {np.mean(FD[1920, 'mask-aae-open']):.2f} | {mean:+.2f} [{low:+.2f}, {high:+.2f}] |") in table
    assert table.startswith("1920 steps, overrides none; code not recorded.")  # a log from before the code line
    coded = bench.read_logs([write_log(tmp_path / "b.log", 1920, code="abc123def456-dirty")])
    assert coded.codes == ("abc123def456-dirty",)
    assert bench.paired_table(coded).startswith("1920 steps, overrides none; code abc123def456-dirty.")


def test_the_mask_is_the_reference_whatever_order_the_log_shows(bench, tmp_path):
    (row,) = bench.paired_rows(bench.read_logs([write_log(tmp_path / "a.log", 1920, order=("mask-aae-open", "mask-aae"))]))
    assert (row["entry"], row["other"]) == ("mask-aae", "mask-aae-open")
    assert row["diff"].mean == pytest.approx(np.mean(np.subtract(FD[1920, "mask-aae"], FD[1920, "mask-aae-open"])))


def test_budget_change_is_the_longer_minus_the_shorter_by_seed(bench, tmp_path):
    short = bench.read_logs([write_log(tmp_path / "s.log", 1920)])
    # the longer budget's log shows the entries in the other order, run apart: the same pair is read
    long = bench.read_logs([write_log(tmp_path / "l.log", 3840, together=False, order=("mask-aae-open", "mask-aae"))])
    at = {b: np.subtract(FD[b, "mask-aae"], FD[b, "mask-aae-open"]) for b in (1920, 3840)}
    table = bench.budget_change_table(short, long)
    row = [line for line in table.splitlines() if line.startswith("| 4 | 8 |")]
    assert row == ["| 4 | 8 | mask-aae - mask-aae-open | 3 | " + " | ".join(
        "{:+.2f} [{:+.2f}, {:+.2f}]".format(*interval(d)) for d in (at[1920], at[3840], at[3840] - at[1920]))
        + " | " + stability_shown(stability(dict(enumerate(at[1920])), dict(enumerate(at[3840])))) + " |"]
    assert table.startswith("Budgets: 1920 -> 3840 steps")
    with pytest.raises(ValueError, match="expected the longer budget after --versus"):
        bench.budget_change_table(long, short)


def test_seeds_without_both_entries_or_a_finite_fd_are_left_out_and_named(bench, tmp_path):
    path = tmp_path / "a.log"
    write_log(path, 1920)
    with open(path, "a") as f:  # seed 5 ran the mask only; seed 6's open mask diverged
        f.write("n=4 m=8 seed=5: mask-aae active 4, FD 9.00 (40 s)\n")
        f.write("n=4 m=8 seed=6: mask-aae active 4, FD 1.00 (40 s); mask-aae-open active 8, FD nan (40 s)\n")
    (row,) = bench.paired_rows(bench.read_logs([str(path)]))
    assert row["seeds"] == [0, 1, 2] and row["left_out"] == [5, 6]
    assert row["mean_entry"] == pytest.approx(np.mean(FD[1920, "mask-aae"]))  # over the paired seeds only
    assert "seeds 5, 6 left out" in bench.paired_table(bench.read_logs([str(path)]))
    lone = tmp_path / "lone.log"
    lone.write_text("budget: 60 epochs x 16 steps of 256 = 960 steps; mask-aae* overrides none\n"
                    "n=4 m=8 seed=0: mask-aae active 4, FD 1.94 (26 s)\n")
    with pytest.raises(ValueError, match="no \\(n, m\\) has two entries"):
        bench.paired_table(bench.read_logs([str(lone)]))


def test_logs_of_two_budgets_or_settings_are_not_pooled(bench, tmp_path):
    a = write_log(tmp_path / "a.log", 1920)
    with pytest.raises(ValueError, match="expected logs of one budget and one --set"):
        bench.read_logs([a, write_log(tmp_path / "b.log", 3840)])
    with pytest.raises(ValueError, match="expected logs of one budget and one --set"):
        bench.read_logs([a, write_log(tmp_path / "c.log", 1920, overrides="{'weight': '10'}")])


def test_an_entry_twice_for_one_seed_is_refused_naming_both_places(bench, tmp_path):
    a = write_log(tmp_path / "a.log", 1920)
    with pytest.raises(ValueError, match=r"mask-aae n=4 m=8 seed=0 is at .*a\.log:3 and at .*a\.log:3"):
        bench.read_logs([a, a])


def test_the_command_line_reads_logs_and_refuses_half_a_budget_change(bench, tmp_path, capsys):
    a = write_log(tmp_path / "a.log", 1920)
    bench.main(["--from-logs", a])
    assert "mask-aae - mask-aae-open" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        bench.main(["--budget-change", a])
    assert e.value.code == 2 and "--versus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main(["--from-logs", str(tmp_path / "missing.log")])
    assert e.value.code == 2 and "missing.log" in capsys.readouterr().err
