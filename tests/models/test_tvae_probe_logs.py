"""``bench/tvae_probe.py --from-logs``: the rows a probe run prints are read back as they were
written, and the paired differences and their changes between probed epochs are the ones computed
by hand from the same numbers."""

import numpy as np
import pytest
from scipy import stats


# CV accuracy per (model, seed, epoch); test accuracy is CV + 0.5
CV = {
    ("vae", 0, 20): 86.00, ("vae", 1, 20): 87.00, ("vae", 2, 20): 86.50,
    ("tvae-affine", 0, 20): 92.00, ("tvae-affine", 1, 20): 93.00, ("tvae-affine", 2, 20): 92.40,
    ("dtvae-affine", 0, 20): 92.50, ("dtvae-affine", 1, 20): 92.80, ("dtvae-affine", 2, 20): 93.10,
    ("vae", 0, 40): 86.20, ("vae", 1, 40): 87.30, ("vae", 2, 40): 86.60,
    ("tvae-affine", 0, 40): 92.10, ("tvae-affine", 1, 40): 93.40, ("tvae-affine", 2, 40): 92.30,
    ("dtvae-affine", 0, 40): 93.60, ("dtvae-affine", 1, 40): 94.00, ("dtvae-affine", 2, 40): 94.20,
}


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("tvae_probe")


def rows():
    return [dict(input=f"{m} (8)", model=m, seed=s, epoch=e, cv=cv, cv_std=0.3, test=cv + 0.5, seconds=100.0 * e)
            for (m, s, e), cv in CV.items()]


@pytest.fixture
def logs(bench, tmp_path):
    """One log a seed, as three processes would print them: the header, the probe rows, a summary
    table (which is not read back) and the flatness table."""
    paths = []
    for seed in (0, 1, 2):
        path = tmp_path / f"seed{seed}.log"
        lines = ["mnist, fixed binarization: ...", "",
                 "| input | seed | epoch | 9-fold CV mean accuracy (%) | std (%) | test accuracy (%) | train time (s) | test ELBO |",
                 "| --- | ---: | ---: | --- | --- | --- | --- | --- |",
                 bench.row_line(dict(input="raw pixels (784)", model=None, seed=seed, epoch="-", cv=91.0, cv_std=0.2,
                                     test=91.5, seconds=30.0))]
        lines += [bench.row_line(r, elbo=-90.0) for r in rows() if r["seed"] == seed]
        lines += ["", "| vae (8) | 1 | 86.00 | 0.30 | 86.50 | 2000 |", "| 0 | -0.29 | -0.15 |", "",
                  "| model | seed | test ELBO | rise over the last tenth | flat? |", "| --- | ---: | ---: | ---: | --- |",
                  f"| vae | {seed} | -95.12 | +0.050 | converged |", f"| dtvae-affine | {seed} | -88.00 | +0.300 | not converged |",
                  # a fall, which the rule as first written logged "converged"
                  f"| tvae-tps | {seed} | -101.46 | -1.994 | converged |"]
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def test_read_logs_gives_back_the_rows_printed(bench, logs):
    read, curves = bench.read_logs(logs)
    assert [r for r in read if r["model"]] == sorted(rows(), key=lambda r: r["seed"])
    assert [r["input"] for r in read if not r["model"]] == ["raw pixels (784)"] * 3
    assert curves[:3] == [dict(model="vae", seed=0, elbo=-95.12, rise=0.05, flag="converged"),
                          dict(model="dtvae-affine", seed=0, elbo=-88.0, rise=0.3, flag="not converged"),
                          dict(model="tvae-tps", seed=0, elbo=-101.46, rise=-1.994, flag="falling")]  # today's rule
    assert len(curves) == 9


def interval(values):
    values = np.asarray(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():+.2f} [{values.mean() - half:+.2f}, {values.mean() + half:+.2f}]"


def test_from_logs_prints_the_paired_differences_and_their_change(bench, logs, capsys):
    bench.main(["--from-logs", *logs])
    out = capsys.readouterr().out
    d20 = [CV[("dtvae-affine", s, 20)] - CV[("tvae-affine", s, 20)] for s in (0, 1, 2)]
    d40 = [CV[("dtvae-affine", s, 40)] - CV[("tvae-affine", s, 40)] for s in (0, 1, 2)]
    epoch40 = out.split("epoch 40: paired differences")[1].split("\n\n")[0]
    assert f"| dtvae-affine - tvae-affine | {interval(d40)} (+1.50, +0.60, +1.90) |" in epoch40
    t40 = [CV[("tvae-affine", s, 40)] - CV[("vae", s, 40)] for s in (0, 1, 2)]
    assert f"| tvae-affine - vae | {interval(t40)}" in epoch40
    change = out.split("change of each CV difference")[1].split("\n\n")[0]
    assert f"| dtvae-affine - tvae-affine | {interval(np.subtract(d40, d20))}" in change
    assert "20 -> 40" in change
    # the budget-stability clause, by hand: DTVAE - TVAE +0.33 [-0.84, +1.51] -> +1.33 [-0.32, +2.99], a change of
    # +1.00 [+0.50, +1.50]; TVAE - VAE +5.97 -> +5.90, both tight and far above 0 and above the paper's +1.60
    clause = out.split("budget-stability clause on each CV difference")[1].split("\n\n")[0]
    assert "| dtvae-affine - tvae-affine | 0 | fails (a, b) |" in clause
    assert "| dtvae-affine - tvae-affine | the paper's +4.26 | fails (b) |" in clause
    assert "| tvae-affine - vae | 0 | holds (above 0) |" in clause
    assert "| tvae-affine - vae | the paper's +1.60 | holds (above +1.60) |" in clause
    bench.clause_table(rows(), ["vae", "tvae-affine", "tvae-tps5"], [0, 1, 2], [(20, 30)])  # under 5/3 apart: no table
    bench.clause_table(rows(), ["vae", "tvae-affine5"], [0, 1, 2], [(20, 40)])  # an entry the paper's table lacks
    assert "the paper's" not in capsys.readouterr().out
    assert "| dtvae-affine | 2 | -88.00 | +0.300 | not converged |" in out
    assert "| tvae-tps | 2 | -101.46 | -1.994 | falling |" in out


def test_from_logs_without_probe_rows_is_one_clear_error(bench, tmp_path, capsys):
    empty = tmp_path / "old.log"
    empty.write_text("| vae (8) | 0 | 85.91 | 0.33 | 86.63 | 213 | 104.6 |\n")  # the older format: no epoch column
    with pytest.raises(SystemExit) as e:
        bench.main(["--from-logs", str(empty)])
    assert e.value.code == 2
    assert f"--from-logs {empty}: no probe rows" in capsys.readouterr().err


def test_curves_of_a_run_dir_read_the_flatness_rule_at_each_probed_epoch(bench, tmp_path, capsys):
    import json

    def write(name, seed, elbos):
        run = tmp_path / "runs" / f"{name}-seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0, "test_elbo": v}) + "\n"
                                                   for e, v in enumerate(elbos, 1)))

    rising = [-120.0 + e for e in range(1, 41)]  # 40 epochs rising by 1 an epoch
    write("tvae-affine", 1, rising)
    write("vae", 0, rising[:30])  # stopped at 30: no row at 40
    (tmp_path / "runs" / "dtvae-affine-seed0").mkdir()  # no epoch recorded: left out
    curves = bench.run_curves(tmp_path / "runs")
    assert list(curves) == [("vae", 0), ("tvae-affine", 1)]  # MODELS' order
    table = bench.curves_table(curves, [20, 40]).splitlines()
    assert len(table) == 2 + 3
    # at 20 epochs a tenth is 2 epochs: a rise of 2; the tenths' means 2 apart, each tenth's variance
    # 0.5, so Welch's se = sqrt(0.5/2 + 0.5/2), df = 2, t(0.975, 2) = 4.303: 2 +- 3.04; no jitter (a steady rise)
    assert table[2] == "| vae | 0 | 20 | -100.00 | -100.00 (20) | +2.000 | not converged | +2.00 [-1.04, +5.04] | 0.00 |"
    assert table[-1].startswith("| tvae-affine | 1 | 40 | -80.00 | -80.00 (40) | +4.000 | not converged | +4.00 [")
    bench.main(["--curves", str(tmp_path / "c.png"), "--run-dir", str(tmp_path / "runs"), "--probe-at", "20"])
    assert (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        bench.main(["--curves", str(tmp_path / "c.png")])
    assert e.value.code == 2 and "--run-dir" in capsys.readouterr().err


def test_a_pair_no_seed_has_at_an_epoch_reads_n_a(bench, capsys):
    """Logs of runs probed at different epochs (the `vae` at 100, the transformers at 50 only): the
    pair at 100 has no seed with both sides, and says so instead of printing a NaN interval."""
    rows = [dict(input="vae (8)", model="vae", seed=0, epoch=100, cv=86.0, cv_std=0.3, test=86.5, seconds=1.0),
            dict(input="tvae-affine (8)", model="tvae-affine", seed=0, epoch=50, cv=91.0, cv_std=0.3, test=91.5, seconds=1.0)]
    bench.summary([r for r in rows if r["epoch"] == 100], ["vae", "tvae-affine"], [0], 100)
    assert "| tvae-affine - vae | n/a (no seed has both) | n/a (no seed has both) |" in capsys.readouterr().out
