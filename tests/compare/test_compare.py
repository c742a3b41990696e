"""``vaezoo compare`` end to end on the digits at a tiny budget (two entries, two seeds, two jobs),
and its statistics against hand computations."""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from vaezoo import cli, zoo
from vaezoo.compare import measures, report, stats
from vaezoo.compare.cells import _environment
from vaezoo.errors import RunError
from vaezoo.evaluation.arrays import read_per_datapoint

TINY = ["--dataset", "digits", "--epochs", "2", "--n-train", "128", "--samples", "32"]
MODELS = ["vae", "iwae"]
SEEDS = [0, 1]


#: an override of one entry only (``ENTRY:KEY=VALUE``): the iwae cells train with DReG, the vae's do not
SCOPED = ["--set", "iwae:estimator=dreg"]


def compare(out, *flags):
    return cli.main(["compare", "--models", *MODELS, "--seeds", "0", "1", "--out", str(out)] + TINY + SCOPED + list(flags))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "board"
    assert compare(out, "--jobs", "2", "--target-elbo", "-60") == 0
    return out


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".pt", ".json", ".npz", ".jsonl")
            and p.parent != out}


@pytest.mark.slow  # trains cells in subprocesses: CI runs it apart (pytest -m slow)
def test_tables_and_figures_written(compared):
    for name in ["leaderboard.md", "leaderboard.csv", "leaderboard.json", "compare.json"]:
        assert (compared / name).is_file(), name
    for name in ["logpx.png", "gap.png", "curves.png", "samples.png"]:
        assert (compared / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    board = json.loads((compared / "leaderboard.json").read_text())
    assert [e["entry"] for e in board["entries"]] == MODELS
    assert [(c["entry"], c["seed"]) for c in board["cells"]] == [(m, s) for m in MODELS for s in SEEDS]
    for c in board["cells"]:
        run = compared / c["entry"] / f"seed{c['seed']}"
        assert c["status"] == "ok", c
        config = json.loads((run / "config.json").read_text())
        assert config["train"]["seed"] == c["seed"]
        assert config["config"]["estimator"] == {"vae": "standard", "iwae": "dreg"}[c["entry"]]
        ev = json.loads((run / "eval-test-n297-K32-seed0.json").read_text())
        assert c["log_px"] == ev["log_px"]["mean"] and c["elbo"] == ev["objective_elbo"]
        assert c["convergence"]["flag"] == "too short to tell"  # 2 epochs
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        reached = next(i for i, r in enumerate(metrics) if r["test_elbo"] >= -60)
        assert c["seconds_to_target"] == pytest.approx(sum(r["seconds"] for r in metrics[:reached + 1]))
        assert 0 <= c["active_units"] <= 50 and 0 <= c["probe"] <= 1 and c["fid"] == "n/a: not 28x28"
        assert 0 < c["mutual_information"] <= math.log(297) + 1e-9
    vae, iwae = board["entries"]
    assert vae["vs_baseline"] == "baseline" and vae["parameters"]["mean"] == iwae["parameters"]["mean"] > 0
    # the paired difference by hand, from the per-datapoint arrays evaluate wrote beside its JSON file
    lp = {(m, s): read_per_datapoint(compared / m / f"seed{s}" / "eval-test-n297-K32-seed0.npz")["log_px"]
          for m in MODELS for s in SEEDS}
    per_seed = [float(np.mean(lp["iwae", s] - lp["vae", s])) for s in SEEDS]
    d = iwae["vs_baseline"]
    assert d["per_seed"] == {str(s): pytest.approx(v, abs=1e-12) for s, v in zip(SEEDS, per_seed)}
    half = 12.706204736174698 * np.std(per_seed, ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
    assert d["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert (d["low"], d["high"]) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half), abs=1e-9)
    assert vae["log_px"]["mean"] == pytest.approx(np.mean([lp["vae", s].mean() for s in SEEDS]), abs=1e-9)
    rows = list(csv.DictReader((compared / "leaderboard.csv").open()))
    assert [(r["kind"], r["entry"]) for r in rows] == [("cell", m) for m in MODELS for _ in SEEDS] + [("entry", m) for m in MODELS]
    md = (compared / "leaderboard.md").read_text()
    assert "`iwae`: --set estimator=dreg" in md
    assert "| `iwae` | 2/2 |" in md and "s to target ELBO" in md and f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" in md


@pytest.mark.slow  # trains cells in subprocesses: CI runs it apart (pytest -m slow)
def test_second_invocation_does_no_training(compared, capsys):
    before = _mtimes(compared)
    logs = {p: p.read_text() for p in (compared / "logs").iterdir()}
    assert len(logs) == 4 and all("$ vaezoo train" in t and "$ vaezoo evaluate" in t for t in logs.values())
    assert compare(compared, "--jobs", "2") == 0
    assert "0 of 4 cells" in capsys.readouterr().err
    assert _mtimes(compared) == before
    assert {p: p.read_text() for p in (compared / "logs").iterdir()} == logs


@pytest.mark.slow
@pytest.mark.parametrize("flags, field, values", [
    (["--set", "latent_dim=10"], "latent_dim", ("50", "10")),
    (["--lr", "0.002"], "lr", ("0.001", "0.002")),
    (["--set", "iwae:estimator=standard"], "estimator", ("dreg", "standard")),
])
def test_changed_setting_is_refused(compared, capsys, flags, field, values):
    before = _mtimes(compared)
    assert compare(compared, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert field in err and all(v in err for v in values), err
    assert _mtimes(compared) == before


@pytest.mark.slow  # trains cells in subprocesses: CI runs it apart (pytest -m slow)
def test_report_alone_rebuilds_identical_tables(compared, capsys):
    tables = {name: (compared / name).read_bytes() for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json")}
    for name in tables:
        (compared / name).unlink()
    assert cli.main(["compare", "--report", str(compared)]) == 0
    assert {name: (compared / name).read_bytes() for name in tables} == tables
    assert cli.main(["compare", "--report", str(compared), "--epochs", "3"]) == 2
    assert "--report DIR alone" in capsys.readouterr().err
    # under the literature preset, the published figures are printed beside ours, each with its protocol
    settings = dict(json.loads((compared / "compare.json").read_text()), preset="literature")
    md = report.markdown(report.collect(compared, settings))
    for row in ("| `vae` | Burda et al. 2016, Table 1 | VAE, k=1, 3280 epochs, IS K=5000 | -86.76 |",
                "| `iwae` | Burda et al. 2016, Table 1 | IWAE, k=50, 3280 epochs, IS K=5000 | -84.78 |"):
        assert row in md
    assert "-86.76" not in (compared / "leaderboard.md").read_text()
    # under a schedule that anneals to zero, the convergence flag says what a flat end means
    cosine = dict(settings, train={**settings["train"], "schedule": "cosine"})
    cosine_md = report.markdown(report.collect(compared, cosine))
    assert "settled at this budget" in cosine_md and "settled at this budget" not in md
    e = settings["epochs"]  # the rate at the start of the last tenth of the epochs, by the cosine's formula
    assert f"under {0.5 * (1 + math.cos(math.pi * (e - math.ceil(e / 10)) / e)):.1%} of the peak" in cosine_md


@pytest.mark.slow  # trains cells in subprocesses: CI runs it apart (pytest -m slow)
def test_killed_cell_resumes(tmp_path, capsys):
    """A cell with a checkpoint of 1 epoch (as a killed run leaves it) is resumed to 2, not retrained;
    through submitit's local executor (the cluster path) when submitit is installed."""
    try:
        import submitit  # noqa: F401  the test extra has it; without it, the local launcher
        launcher = "submitit-local"
    except ImportError:
        launcher = "local"
    run = tmp_path / "board" / "vae" / "seed0"
    assert cli.main(["train", "--model", "vae", "--dataset", "digits", "--epochs", "1", "--n-train", "128",
                     "--eval-samples", "0", "--quiet", "--out", str(run), "--device", "cpu"]) == 0
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert cli.main(["compare", "--models", "vae", "--seeds", "0", "--out", str(tmp_path / "board"),
                     "--launcher", launcher] + TINY) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2] and metrics[0] == first
    log = (tmp_path / "board" / "logs" / "vae-seed0.log").read_text()
    assert "$ vaezoo train --resume" in log and "$ vaezoo train --model" not in log
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert board["cells"][0]["status"] == "ok" and board["entries"][0]["vs_baseline"] == "baseline"
    assert launcher == "local" or any((tmp_path / "board" / "submitit").iterdir())


def test_paired_difference_against_hand_computation():
    base = {0: np.array([-10.0, -20.0, -30.0]), 1: np.array([-11.0, -19.0, -31.0]), 2: np.array([-10.5, -20.5, -29.0])}
    entry = {0: np.array([-9.0, -19.0, -30.0]), 1: np.array([-11.0, -18.0, -30.5]), 2: np.array([-10.0, -21.0, -28.0])}
    d = stats.paired_difference(entry, base)
    per_seed = [2 / 3, 1.5 / 3, 1.0 / 3]  # seed 0: (1 + 1 + 0) / 3, seed 1: (0 + 1 + 0.5) / 3, seed 2: (0.5 - 0.5 + 1) / 3
    mean = sum(per_seed) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / 2)
    half = 4.302652729749464 * sd / math.sqrt(3)  # t(0.975, 2 df)
    assert d.per_seed == pytest.approx(dict(enumerate(per_seed)), abs=1e-12)
    assert (d.mean, d.low, d.high) == pytest.approx((mean, mean - half, mean + half), abs=1e-12)
    assert d.method == "3 seeds: t-interval over seeds"
    one = stats.paired_difference({0: entry[0]}, {0: base[0]})  # one seed: over the 3 test points
    diffs = [1.0, 1.0, 0.0]
    sd1 = math.sqrt(sum((v - 2 / 3) ** 2 for v in diffs) / 2)
    assert (one.mean, one.low, one.high) == pytest.approx((2 / 3, 2 / 3 - 4.302652729749464 * sd1 / math.sqrt(3),
                                                           2 / 3 + 4.302652729749464 * sd1 / math.sqrt(3)), abs=1e-12)
    assert one.method == stats.ONE_SEED
    assert stats.paired_difference({3: entry[0]}, {0: base[0]}) is None
    with pytest.raises(ValueError, match="same test set"):
        stats.paired_difference({0: entry[0][:2]}, {0: base[0]})
    s = stats.over_seeds([1.0, 3.0, None])
    assert (s.mean, s.sd, s.n) == (2.0, pytest.approx(math.sqrt(2)), 2)


def test_convergence_flag():
    curve = [{"epoch": e, "test_elbo": -100 + 10 * (1 - 0.5 ** e)} for e in range(1, 21)]
    assert measures.convergence(curve[:9], 0.1)["flag"] == "too short to tell"
    assert measures.convergence([{"epoch": 1, "train_loss": 3.0}] * 12, 0.1)["flag"] == "n/a: no test ELBO"
    rising = measures.convergence(curve[:6] + [{"epoch": e, "test_elbo": -95 + 0.2 * e} for e in range(7, 21)], 0.1)
    assert rising["flag"] == "not converged" and rising["rise"] == pytest.approx(0.4)  # last tenth: 2 epochs
    flat = measures.convergence(curve, 0.1)
    assert flat["flag"] == "converged" and 0 < flat["rise"] < 0.1
    # a test ELBO that fell (over-fitting) is not a run that settled
    falling = measures.convergence(curve[:6] + [{"epoch": e, "test_elbo": -95 - 0.2 * e} for e in range(7, 21)], 0.1)
    assert falling["flag"] == "falling" and falling["rise"] == pytest.approx(-0.4)
    assert measures.convergence(curve[:18] + [{"epoch": 19, "test_elbo": -90.05}, {"epoch": 20, "test_elbo": -90.1}],
                                0.1)["flag"] == "converged"  # moved by at most 0.1


def test_tenths_change_is_the_welch_interval_of_the_last_two_tenths():
    from scipy.stats import t

    # 40 epochs: a tenth is 4; the last four jitter around -89.5, the four before around -91.2
    tail = [-91.5, -90.8, -91.6, -91.0, -89.1, -89.6, -89.3, -89.8]
    curve = [{"epoch": e, "test_elbo": -120.0 + e} for e in range(1, 33)]
    curve += [{"epoch": 33 + i, "test_elbo": v} for i, v in enumerate(tail)]
    got = measures.tenths_change(curve)
    before, last = np.array(tail[:4]), np.array(tail[4:])
    va, vb = last.var(ddof=1) / 4, before.var(ddof=1) / 4
    se, df = math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 3)
    change = last.mean() - before.mean()
    assert got["change"] == pytest.approx(change, abs=1e-12) and got["window"] == 4
    assert (got["low"], got["high"]) == (pytest.approx(change - t.ppf(0.975, df) * se, abs=1e-9),
                                         pytest.approx(change + t.ppf(0.975, df) * se, abs=1e-9))
    assert got["jitter"] == pytest.approx(np.diff(tail).std(ddof=1) / math.sqrt(2), abs=1e-12)
    assert got["low"] > 0  # it rose by more than its noise
    assert measures.tenths_change(curve[:19]) is None


def test_the_per_cell_table_reads_the_tenths_change_from_the_recorded_curve():
    curve = [[e, -120.0 + e] for e in range(1, 21)] + [[21, None]]  # an epoch without a test ELBO is skipped
    # a tenth is 2 epochs: means 2 apart, each tenth's variance 0.5, Welch df 2: 2 +- t(0.975, 2) sqrt(0.5)
    assert report._tenths(curve) == "+2.00 [-1.04, +5.04]"
    assert measures.tenths_change([{"test_elbo": v} for _, v in curve])["jitter"] == 0.0  # a steady rise: no jitter
    assert report._tenths(curve[:10]) == report._tenths(None) == "n/a"


def test_convergence_summary_over_seeds():
    assert report._convergence(["converged"] * 3) == "converged"
    assert report._convergence(["converged", "not converged", "converged"]) == "not converged (1 of 3 seeds)"
    assert report._convergence(["falling", "not converged", "converged"]) == "not converged (2 of 3 seeds; 1 falling)"
    assert report._convergence(["converged", "too short to tell"]) == "too short to tell"


def test_point_mass_guides_and_threads_per_job():
    x = torch.zeros(2, 1, 8, 8)
    assert measures.point_mass(zoo.create("aae", data_shape=(1, 8, 8)), x)
    assert not measures.point_mass(zoo.create("vae", data_shape=(1, 8, 8)), x)
    tvae = zoo.create("tvae-affine", data_shape=(1, 8, 8))  # pose_prior=none: a point-mass pose u
    assert not measures.point_mass(tvae, x) and measures.point_mass_sites(tvae, x) == ["u"]
    assert measures.conditional({"config": zoo.config_dict(tvae.config)})
    env = _environment(3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert os.path.isdir(os.path.join(env["PYTHONPATH"].split(os.pathsep)[0], "vaezoo"))


def _tiny_cell(tmp_path, seed=0):
    from vaezoo.compare.cells import Cell

    return Cell(model="vae", seed=seed, run=str(tmp_path / "vae" / f"seed{seed}"), log=str(tmp_path / f"vae-seed{seed}.log"),
                epochs=1, dataset="digits", overrides={}, train={}, samples=5, eval_seed=0, ais_subset=None,
                ais_steps=None, data_dir=None, num_test=10, n_test=None)


def test_threads_per_cell_are_the_flag_else_the_cores_shared_by_the_jobs(tmp_path, monkeypatch, capsys):
    from vaezoo.compare import cells as cells_mod

    seen = []
    monkeypatch.setattr(cells_mod, "run_cell", lambda cell, children=None: seen.append(cell.threads))
    monkeypatch.setattr(cells_mod, "cores", lambda: 7)
    cell = _tiny_cell(tmp_path)
    assert cells_mod.run_local([cell, cell], 2) == [] and seen == [3, 3]  # 7 cores // 2 jobs
    assert cells_mod.run_local([cell], 2, threads=1) == [] and seen[-1] == 1
    assert cells_mod.run_local([cell], 9) == [] and seen[-1] == 1  # never 0
    capsys.readouterr()
    assert cli.main(["compare", "--models", "vae", "--dataset", "digits", "--threads", "0",
                     "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0] and "0" in err[0]


def test_a_comparison_reports_each_cell_as_it_starts_and_finishes(tmp_path, monkeypatch, capsys):
    from vaezoo.compare import cells as cells_mod

    def run_cell(cell, children=None):
        if cell.seed == 1:
            raise RunError(f"cell {cell.run}: vaezoo train failed: boom")

    monkeypatch.setattr(cells_mod, "run_cell", run_cell)
    cells = [_tiny_cell(tmp_path, s) for s in (0, 1)]
    errors = cells_mod.run_local(cells, 1)
    assert errors == [f"cell {tmp_path / 'vae' / 'seed1'}: vaezoo train failed: boom"]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"compare: vae seed 0: started (log {tmp_path / 'vae-seed0.log'})"
    assert lines[1].startswith("compare: cell 1 of 2 done: vae seed 0 (") and lines[1].endswith(" min)")
    assert lines[2].startswith("compare: vae seed 1: started")
    assert lines[3].startswith("compare: cell 2 of 2 failed: vae seed 1 (")


def test_plan_passes_schedule_and_test_subset(tmp_path):
    from vaezoo.compare.cells import Cell, plan

    cell = Cell(model="vae", seed=1, run=str(tmp_path / "vae" / "seed1"), log=str(tmp_path / "log"), epochs=3,
                dataset="digits", overrides={"latent_dim": "5"}, train={"schedule": "burda", "batch_size": 20},
                samples=50, eval_seed=0, ais_subset=4, ais_steps=7, data_dir=None, num_test=100, n_test=100)
    train, evaluate, ais = plan(cell)
    assert train[:2] == ["train", "--model"] and train[train.index("--schedule") + 1] == "burda"
    assert train[train.index("--batch-size") + 1] == "20" and "latent_dim=5" in train
    assert evaluate[evaluate.index("--n") + 1] == "100" and evaluate[evaluate.index("--samples") + 1] == "50"
    assert ais.count("--n") == 1 and ais[ais.index("--n") + 1] == "4" and ais[ais.index("--ais") + 1] == "7"
    whole = plan(Cell(**{**cell.__dict__, "n_test": None}))[1]
    assert "--n" not in whole


def test_literature_preset_settings_and_overrides():
    """The preset is Burda et al.'s protocol as the Burda-protocol runs of bench/RESULTS.md made it
    (batch 100, their schedule, K = 5000, 3280 epochs); a flag overrides the preset's value."""
    import argparse

    from vaezoo.compare import command, settings

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    preset = settings.make(parser.parse_args(["compare", "--preset", "literature"]))
    assert preset["models"] == ["vae", "iwae", "rho-vae"] and preset["dataset"] == "mnist"
    assert (preset["epochs"], preset["samples"], preset["seeds"]) == (3280, 5000, [0, 1, 2])
    assert preset["train"] == {"batch_size": 100, "schedule": "burda"}
    mine = settings.make(parser.parse_args(["compare", "--preset", "literature", "--batch-size", "20", "--epochs", "7"]))
    assert mine["train"] == {"batch_size": 20, "schedule": "burda"} and mine["epochs"] == 7


def test_paper_presets_pit_each_paper_against_its_baseline():
    """A seed paper's preset names the paper's entry and its baseline (the leaderboard's baseline,
    listed first), and its settings; every --set the user adds must fit both entries."""
    import argparse

    from vaezoo.compare import command, settings
    from vaezoo.errors import ConfigError

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    sos = settings.make(parser.parse_args(["compare", "--preset", "sos-vae"]))
    assert sos["models"] == ["beta-vae-gaussian-paper", "sos-vae-paper"] and sos["baseline"] == "beta-vae-gaussian-paper"
    assert sos["train"] == {"batch_size": 25, "lr": 1e-4} and (sos["epochs"], sos["samples"], sos["n_test"]) == (10, 100, 200)
    # the two -paper entries share the constants the paper gives both models
    a, b = (zoo.make_config(name, {}) for name in sos["models"])
    assert (a.latent_dim, a.kl_target, a.cov_diag, a.multiplier_update, a.batch_sum, a.net) == \
        (b.latent_dim, b.kl_target, b.cov_diag, b.multiplier_update, b.batch_sum, b.net) == (128, 45.0, 1e-5, "two-sided", True, "conv")
    rho = settings.make(parser.parse_args(["compare", "--preset", "rho-vae", "--set", "latent_dim=20", "--n-test", "50"]))
    assert rho["models"] == ["vae", "rho-vae"] and rho["baseline"] == "vae" and rho["set"] == {"latent_dim": "20"}
    assert (rho["epochs"], rho["samples"], rho["n_test"], rho["train"]) == (30, 5000, 50, {"batch_size": 100})
    with pytest.raises(ConfigError, match="preset 'sos'"):
        settings.make(parser.parse_args(["compare", "--preset", "sos"]))


def test_set_of_one_entry_and_the_spatial_preset():
    """``--set ENTRY:KEY=VALUE`` overrides one entry's field, after those of every entry (so it wins);
    the spatial-vae preset narrows the conv vae's decoder to the spatial decoders' size that way, and
    a user's --set of the same field wins over the preset's. A scoped --set naming an entry not
    compared, or no field, is one clear error."""
    import argparse

    from vaezoo.compare import command, settings
    from vaezoo.errors import ConfigError

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())

    def make(*flags):
        return settings.make(parser.parse_args(["compare", *flags]))

    s = make("--models", "vae", "iwae", "--set", "latent_dim=7", "--set", "iwae:latent_dim=9", "--set", "vae:net=conv")
    assert s["set"] == {"latent_dim": "7"} and s["set_entry"] == {"iwae": {"latent_dim": "9"}, "vae": {"net": "conv"}}
    vae, iwae = (settings.expected_config(s, name, 0)["config"] for name in ("vae", "iwae"))
    assert (vae["latent_dim"], vae["net"], iwae["latent_dim"], iwae["net"]) == (7, "conv", 9, "mlp")
    sp = make("--preset", "spatial-vae")
    assert sp["models"] == ["vae", "spatial-vae-naive", "spatial-vae-mvn"] and sp["baseline"] == "vae"
    assert sp["set"] == {} and sp["set_entry"] == {"vae": {"net": "conv", "decoder_channels": "2,32"}}
    assert sp["train"] == {"batch_size": 100, "schedule": "cosine"} and (sp["samples"], sp["n_test"]) == (5000, 200)
    sizes = {name: sum(p.numel() for p in zoo.create(name, data_shape=(1, 28, 28), **settings.entry_overrides(sp, name))
                       .model.decoder.parameters()) for name in sp["models"]}
    assert sizes == {"vae": 39_811, "spatial-vae-naive": 42_593, "spatial-vae-mvn": 42_593}
    wide = make("--preset", "spatial-vae", "--set", "vae:decoder_channels=64,32", "--set", "vae:latent_dim=784")
    assert wide["set_entry"]["vae"] == {"net": "conv", "decoder_channels": "64,32", "latent_dim": "784"}
    with pytest.raises(ConfigError, match="names entry 'rho-vae', which is not compared"):
        make("--models", "vae", "iwae", "--set", "rho-vae:latent_dim=3")
    with pytest.raises(ConfigError, match="names no field"):
        make("--models", "vae", "--set", "vae:=3")
    with pytest.raises(ConfigError, match="has no config field 'decoder_width'"):
        make("--models", "vae", "spatial-vae-naive", "--set", "vae:decoder_width=3")


def test_the_leaderboard_reads_both_frechet_distances_of_a_cell():
    """One measure holds the FD of the decoder's means and of samples from the observation
    distribution (the SOS-VAE claim compares the one with the other); an entry without it shows why."""
    cell = {"fid": {"means": 655.9, "samples": 646.7}}
    assert report._value(cell, "fid_means") == 655.9 and report._value(cell, "fid") == 646.7
    why = {"fid": "n/a: not 28x28"}
    assert report._value(why, "fid_means") == report._value(why, "fid") == "n/a: not 28x28"
    assert [t for k, t in report.NUMERIC if k.startswith("fid")] == ["FID means", "FID samples"]


def test_a_cell_from_before_a_config_field_existed_reads_it_as_its_default(tmp_path):
    """A field added to an entry after a cell was trained (its default keeps the old behaviour) is
    read as that default, as loading the run does: the comparison goes on. A stored value that
    differs is still refused, naming the field."""
    from vaezoo.compare.cells import check_cell
    from vaezoo.compare.settings import expected_config
    from vaezoo.errors import ConfigError

    settings = {"dataset": "digits", "train": {}, "set": {"latent_dim": "5"}, "set_entry": {}}
    expected = expected_config(settings, "vae", 0)
    old = dict(json.loads(json.dumps(expected)), data_shape=[1, 8, 8])
    old["train"]["epochs"] = 3
    del old["config"]["beta"], old["config"]["mmd_weight"]  # fields of this session, absent from older cells
    run = tmp_path / "vae" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(old))
    check_cell(run, expected, epochs=3)
    for key, value in (("beta", 4.0), ("latent_dim", 10)):
        (run / "config.json").write_text(json.dumps({**old, "config": {**old["config"], key: value}}))
        with pytest.raises(ConfigError, match=f"config {key}={value!r}, not"):
            check_cell(run, expected, epochs=3)


def test_frechet_distances_paired_by_seed_against_hand_computation():
    ok = lambda fd, means: {"status": "ok", "fid": {"samples": fd, "means": means}}  # noqa: E731
    cells = {("vae", 0): ok(100.0, 50.0), ("vae", 1): ok(110.0, 52.0), ("vae", 2): ok(90.0, 48.0),
             ("rho-vae", 0): ok(80.0, 60.0), ("rho-vae", 1): ok(95.0, 61.0), ("rho-vae", 2): {"status": "failed"}}
    d = report._paired_cells(cells, "rho-vae", "vae", [0, 1, 2], "fid")  # seed 2 failed: seeds 0 and 1
    per_seed = [-20.0, -15.0]
    half = 12.7062047 * np.std(per_seed, ddof=1) / math.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert d["per_seed"] == {"0": -20.0, "1": -15.0} and d["mean"] == -17.5
    assert d["low"] == pytest.approx(-17.5 - half) and d["high"] == pytest.approx(-17.5 + half)
    assert report._paired_cells(cells, "rho-vae", "vae", [0, 1, 2], "fid_means")["mean"] == pytest.approx(9.5)
    one = report._paired_cells(cells, "rho-vae", "vae", [0], "fid")
    assert one["mean"] == -20.0 and one["low"] is None and report._diff(one) == "-20.00"  # one seed: no interval
    assert report._paired_cells({**cells, ("vae", 0): {"status": "ok", "fid": "n/a: not 28x28"}},
                                "rho-vae", "vae", [0], "fid") is None


def test_an_interrupted_comparison_stops_its_running_commands_and_starts_no_more(tmp_path):
    """``Children.stop``: a command that does not stop on its own within the grace gets the signal;
    one that does (a terminal's Ctrl-C reached it too) gets none; no command starts after."""
    import signal
    import sys
    import threading
    import time

    from vaezoo.compare.cells import Cell, Children, run_cell

    children = Children()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    # once started (the file written), exits by itself in 0.5 s, and with status 7 had it been sent SIGTERM
    ready = tmp_path / "ready"
    quick = [sys.executable, "-c", "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
             f"pathlib.Path({str(ready)!r}).touch(); time.sleep(0.5)"]
    results = {}

    def run(name, argv):
        with open(tmp_path / f"{name}.log", "w") as log:
            results[name] = children.run(argv, log, dict(os.environ))

    threads = [threading.Thread(target=run, args=a) for a in (("sleeper", sleeper), ("quick", quick))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), results
    start = time.monotonic()
    children.stop(signal.SIGTERM, grace=2.0)
    for t in threads:
        t.join(30)
    assert results["sleeper"][0] == -signal.SIGTERM and results["quick"][0] == 0
    assert time.monotonic() - start < 30
    cell = Cell(model="vae", seed=0, run=str(tmp_path / "vae" / "seed0"), log=str(tmp_path / "logs" / "c.log"), epochs=1,
                dataset="digits", overrides={}, train={}, samples=0, eval_seed=0, ais_subset=None, ais_steps=None,
                data_dir=None)
    with pytest.raises(RunError, match="not started: the comparison was interrupted"):
        run_cell(cell, children)
    assert not (tmp_path / "vae").exists()


@pytest.mark.slow  # processes of their own: ~20-40 s of start-up and training
def test_sigterm_to_a_comparison_alone_stops_its_cell(tmp_path, signal_when_checkpointed):
    """`kill` (or `timeout`) reaches `vaezoo compare` and not its cells' processes: it passes the
    signal on, so the running cell keeps its checkpoint and leaves no lock, the later cells never
    start, and the comparison exits 143 with one line instead of waiting for the cell to finish."""
    import signal
    import sys

    from vaezoo import runlock, runs

    out = tmp_path / "board"
    argv = [sys.executable, "-m", "vaezoo", "compare", "--models", "vae", "--seeds", "0", "1", "--jobs", "1",
            "--dataset", "digits", "--epochs", "100000", "--n-train", "64", "--samples", "8", "--out", str(out)]
    run = out / "vae" / "seed0"
    returncode, err = signal_when_checkpointed(argv, run / "checkpoint.pt", signal.SIGTERM)
    assert returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("vaezoo compare: interrupted")
    log = (out / "logs" / "vae-seed0.log").read_text()
    assert "vaezoo train: interrupted; the last checkpoint is kept (SIGTERM" in log
    assert not (run / runlock.LOCK).exists() and not (out / "vae" / "seed1").exists()
    runs.load_trained(run, torch.device("cpu"))  # whole, and checked
