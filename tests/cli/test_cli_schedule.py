"""``vaezoo train --schedule/--warmup-epochs/--kl-warmup`` and ``--set estimator=...``: recorded in
config.json, followed epoch by epoch, kept on resume, which continues the schedule exactly."""

import json

import pytest
import torch

from vaezoo import cli
from vaezoo.inference import checkpoint

SMALL = ["--set", "hidden=16", "--set", "latent_dim=4", "--set", "estimator=stl", "--n-train", "128", "--batch-size", "64",
         "--eval-samples", "0", "--quiet", "--device", "cpu", "--no-compile"]
FLAGS = ["--schedule", "burda", "--warmup-epochs", "1", "--kl-warmup", "1", "--lr", "0.01"]


def _params(run):
    return checkpoint.load(run / "checkpoint.pt")["objective"]


def test_train_records_and_follows_the_schedule_and_resumes_it_exactly(tmp_path, capsys):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cli.main(["train", "--out", str(whole), "--epochs", "3"] + FLAGS + SMALL) == 0
    cfg = json.loads((whole / "config.json").read_text())
    assert {k: cfg["train"][k] for k in ("schedule", "warmup_epochs", "kl_warmup")} == {"schedule": "burda", "warmup_epochs": 1, "kl_warmup": 1}
    assert cfg["config"]["estimator"] == "stl"
    metrics = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in metrics] == pytest.approx([0.01, 0.01 * 10 ** (-1 / 7), 0.01 * 10 ** (-1 / 7)])
    assert [r["kl_weight"] for r in metrics] == pytest.approx([0.5, 1.0, 1.0])  # 2 steps an epoch
    assert cli.main(["train", "--out", str(part), "--epochs", "1"] + FLAGS + SMALL) == 0
    assert checkpoint.load(part / "checkpoint.pt")["scheduler"]["last_epoch"] == 1
    assert cli.main(["train", "--out", str(part), "--resume", "--epochs", "3", "--eval-samples", "0", "--quiet", "--device", "cpu"]) == 0
    resumed = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in metrics]
    a, b = _params(whole), _params(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert cli.main(["train", "--out", str(part), "--resume", "--epochs", "4", "--schedule", "cosine", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--schedule cosine differs from the run's schedule burda" in err and "\n" not in err


@pytest.mark.parametrize("flags, match", [
    (["--schedule", "step"], "--schedule 'step' is not a schedule; expected one of constant, burda, cosine"),
    (["--kl-warmup", "-1"], "--kl-warmup=-1; expected an integer >= 0"),
    (["--set", "estimator=dreg"], "estimator='dreg' with objective=elbo; expected one of standard, stl"),
    (["--model", "iwae", "--kl-warmup", "2"], "--kl-warmup needs an ELBO objective; 'iwae' trains with IWAE"),
])
def test_bad_schedule_flags_are_one_line_errors(tmp_path, capsys, flags, match):
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--epochs", "1"] + flags + ["--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # refused before the run directory appears
