"""Every command on every registered entry: ``train --epochs 1``, ``evaluate`` (with and without
importance sampling), ``sample`` and, on 28x28 data, ``evaluate --fid``, so that a new entry
cannot ship a command that crashes (all entries: ``pytest -m slow``; the default run keeps a few).
Entries without a density (a deterministic encoder) say so and are scored by ``--fid``."""

import json

import pytest

from vaezoo import cli, zoo
from vaezoo.data import download

CPU = ["--quiet", "--device", "cpu"]
NO_DENSITY = ("aae", "mask-aae", "mask-aae-open", "wae-gan", "wae-mmd")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download, "urlopen", refuse)


def test_the_no_density_entries_are_registered():
    assert set(NO_DENSITY) <= set(zoo.names())


# in the default run: the entries without a density and the vae; every entry under -m slow
QUICK = NO_DENSITY + ("vae",)


def _entries(quick):
    return [n if n in quick else pytest.param(n, marks=pytest.mark.slow) for n in zoo.names()]


@pytest.mark.parametrize("name", _entries(QUICK))
def test_train_evaluate_and_sample(name, tmp_path, capsys):
    run = tmp_path / name
    assert cli.main(["train", "--model", name, "--out", str(run), "--dataset", "digits", "--n-train", "32",
                     "--batch-size", "32", "--epochs", "1", "--eval-samples", "2"] + CPU) == 0
    for samples in ("2", "0"):
        assert cli.main(["evaluate", str(run), "--n", "4", "--samples", samples] + CPU) == 0
    out = capsys.readouterr().out
    if name in NO_DENSITY:
        assert "has a deterministic encoder and so no density: no ELBO, no log p(x)" in out
        assert json.loads((run / "eval-test-n4-K0-seed0.json").read_text())["density"] is False
    else:
        assert "ELBO" in out and (run / "eval-test-n4-K2-seed0.json").is_file()
    assert cli.main(["sample", str(run), "--n", "2", "--device", "cpu"]) == 0
    assert (run / "samples.png").is_file()


@pytest.mark.parametrize("name", _entries(NO_DENSITY))
def test_evaluate_fid_on_28x28_data(name, tmp_path, capsys):
    """``--fid`` (the only quality figure of the entries without a density) on mnist-small."""
    run = tmp_path / name
    assert cli.main(["train", "--model", name, "--out", str(run), "--n-train", "32", "--batch-size", "32",
                     "--epochs", "1", "--eval-samples", "0"] + CPU) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--n", "16", "--samples", "0" if name in NO_DENSITY else "2", "--fid"] + CPU) == 0
    out = capsys.readouterr().out
    assert "Frechet distance to the 16 test images" in out
    assert "fid" in json.loads(next(run.glob("eval-test-n16-*.json")).read_text())


def test_a_conditional_log_px_says_so(tmp_path, capsys):
    """A transformer VAE with a point-mass pose (pose_prior=none, the default) scores log p(x | u):
    the terminal and the evaluation file say so, so it is not read as a marginal likelihood."""
    run = tmp_path / "tvae"
    assert cli.main(["train", "--model", "tvae-affine", "--out", str(run), "--dataset", "digits", "--n-train", "32",
                     "--batch-size", "32", "--epochs", "1", "--eval-samples", "0"] + CPU) == 0
    assert cli.main(["evaluate", str(run), "--n", "4", "--samples", "2"] + CPU) == 0
    assert "conditional on the pose" in capsys.readouterr().out
    meaning = json.loads((run / "eval-test-n4-K2-seed0.json").read_text())["meaning"]
    assert meaning["log_px"].startswith("log p(x | u) conditional")
    assert cli.main(["train", "--model", "tvae-affine", "--set", "pose_prior=normal", "--out", str(tmp_path / "m"),
                     "--dataset", "digits", "--n-train", "32", "--batch-size", "32", "--epochs", "1",
                     "--eval-samples", "2"] + CPU) == 0
    assert "conditional on the pose" not in capsys.readouterr().out
    assert "conditional" not in json.loads((tmp_path / "m" / "eval.json").read_text())["meaning"]["log_px"]
