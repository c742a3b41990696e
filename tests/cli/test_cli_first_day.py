"""What a researcher meets on the first day: --keep best and --patience from the command line,
TensorBoard events, a fast --help, a misspelled command, --threads, and pictures that never
replace training's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vaezoo
from vaezoo import cli, runs
from vaezoo.errors import ConfigError, RunError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "digits", "--n-train", "256", "--eval-samples", "0", "--quiet", "--device", "cpu", "--no-compile"]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    """A run whose learning rate is too large: its test ELBO peaks, then falls, and patience stops it."""
    out = tmp_path_factory.mktemp("runs") / "best"
    assert cli.main(["train", "--out", str(out), "--epochs", "12", "--lr", "0.05", "--keep", "best", "--patience", "2"] + TINY) == 0
    return out


def test_keep_best_and_patience_from_the_command_line(best_run, tmp_path, capsys):
    cfg = json.loads((best_run / "config.json").read_text())
    assert cfg["train"]["keep"] == "best" and cfg["train"]["patience"] == 2
    metrics = [json.loads(line) for line in (best_run / "metrics.jsonl").read_text().splitlines()]
    best = max(metrics, key=lambda r: r["test_elbo"])
    assert metrics[-1]["best_epoch"] == best["epoch"] and metrics[-1]["best_test_elbo"] == best["test_elbo"]
    assert len(metrics) == best["epoch"] + 2 < 12, "patience 2 stops two epochs after the best"
    assert metrics[-1]["stopped"].startswith(f"stopped early after epoch {len(metrics)}")
    assert "stopped early" in (best_run / "report.md").read_text()
    last, kept = vaezoo.load(best_run), vaezoo.load(best_run, which="best")
    assert (last.epoch, kept.epoch) == (len(metrics), best["epoch"])
    assert not all(torch.equal(a, b) for a, b in zip(last.zoo_model.state_dict().values(), kept.zoo_model.state_dict().values()))
    with pytest.raises(ConfigError, match="which='first' is not a checkpoint of a run; expected 'last' or 'best'"):
        vaezoo.load(best_run, which="first")
    # a resumed run keeps its settings: another --patience is refused in one line
    capsys.readouterr()
    assert cli.main(["train", "--out", str(best_run), "--resume", "--patience", "5", "--quiet", "--eval-samples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("vaezoo train: error: --patience 5 differs from the run's patience 2; a resumed run keeps its settings: "
                   "omit --patience or start a new run")
    # resumed as it is, the stopped run says so again and trains nothing more
    assert cli.main(["train", "--out", str(best_run), "--resume", "--quiet", "--eval-samples", "0"]) == 0
    assert "stopped early after epoch" in capsys.readouterr().err
    assert len((best_run / "metrics.jsonl").read_text().splitlines()) == len(metrics)


def test_a_run_without_best_pt(tmp_path, capsys):
    run = tmp_path / "last"
    assert cli.main(["train", "--out", str(run), "--epochs", "1"] + TINY) == 0
    assert not (run / "best.pt").exists()
    with pytest.raises(RunError, match="has no best.pt: it was trained without --keep best"):
        vaezoo.load(run, which="best")
    assert cli.main(["train", "--out", str(tmp_path / "bad"), "--keep", "all"] + TINY) == 2
    assert "argument --keep: invalid choice: 'all'" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "bad"), "--patience", "0"] + TINY) == 2
    assert "--patience=0; expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_tensorboard_events_hold_each_epochs_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    assert cli.main(["train", "--out", str(run), "--epochs", "2", "--tensorboard"] + TINY) == 0
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3", "--tensorboard", "--quiet", "--eval-samples", "0"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert {"train_loss", "test_elbo", "seconds"} <= set(events.Tags()["scalars"])
    elbo = events.Scalars("test_elbo")
    assert [e.step for e in elbo] == [1, 2, 3]
    assert [e.value for e in elbo] == pytest.approx([r["test_elbo"] for r in metrics], rel=1e-6)


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were absent
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--tensorboard"] + TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('vaezoo train: error: --tensorboard needs the tensorboard package; expected it installed: '
                   'pip install "vaezoo[tensorboard]"')
    assert not (tmp_path / "run").exists()


def test_help_imports_neither_torch_nor_pyro():
    code = ("import sys, vaezoo.cli as c; c.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    for argv in (["--help"], ["train", "--help"]):
        done = subprocess.run([sys.executable, "-m", "vaezoo", *argv], capture_output=True, text=True, env=_env(), cwd=ROOT)
        assert done.returncode == 0 and "usage: vaezoo" in done.stdout
    assert "--patience N" in done.stdout and "--threads N" in done.stdout


def test_a_misspelled_command_is_named_with_the_closest(capsys):
    assert cli.main(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "vaezoo: error: unknown command 'trian'; did you mean 'train'?"
    assert cli.main(["frobnicate", "--epochs", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("vaezoo: error: unknown command 'frobnicate'; expected one of list, show, "
                                               "train, evaluate, sample, compare")
    done = subprocess.run([sys.executable, "-m", "vaezoo", "evalute"], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip() == "vaezoo: error: unknown command 'evalute'; did you mean 'evaluate'?"


def test_threads_sets_torchs_threads(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cli.main(["list", "--threads", "1"]) == 2  # list takes no --threads
        capsys.readouterr()
        assert cli.main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", "--threads", "1"] + TINY) == 0
        assert torch.get_num_threads() == 1
        capsys.readouterr()
        assert cli.main(["sample", str(tmp_path / "run"), "--n", "4", "--threads", "0", "--device", "cpu"]) == 2
        assert capsys.readouterr().err.strip() == "vaezoo sample: error: --threads=0; expected an integer >= 1"
    finally:
        torch.set_num_threads(before)


def test_sample_keeps_trainings_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run), "--epochs", "1"] + TINY) == 0
    trained = (run / "samples.png").read_bytes()
    legend = Image.open(run / "reconstructions.png").text["Description"]
    assert legend == runs.PAIRS_LEGEND and "data" in legend and "reconstructions" in legend
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--n", "4", "--device", "cpu", "--seed", "3"]) == 0
    assert cli.main(["sample", str(run), "--n", "4", "--device", "cpu", "--from-likelihood"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run / "samples-epoch1-seed3.png"), str(run / "samples-likelihood-epoch1-seed0.png")]
    assert all(Path(p).is_file() for p in printed)
    assert (run / "samples.png").read_bytes() == trained


def test_a_real_valued_likelihood_on_binarized_data_is_warned_about(tmp_path, capsys):
    flags = ["--dataset", "digits", "--epochs", "1", "--n-train", "32", "--eval-samples", "0", "--quiet",
             "--no-compile", "--device", "cpu"]
    assert cli.main(["train", "--set", "likelihood=normal", "--out", str(tmp_path / "a")] + flags) == 0
    assert "warning: vae: a real-valued likelihood on binary data (binarize=dynamic)" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(tmp_path / "b")] + flags) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_evaluation_at_a_later_epoch_keeps_the_earlier_one(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--quiet", "--device", "cpu"]
    assert cli.main(["train", "--out", str(run), "--dataset", "digits", "--epochs", "1", "--n-train", "32",
                     "--eval-samples", "0", "--no-compile"] + flags) == 0
    evaluate = ["evaluate", str(run), "--n", "4", "--samples", "2"] + flags
    assert cli.main(evaluate) == 0
    assert cli.main(evaluate) == 0  # the same epoch again: replaced, nothing kept beside it
    assert not list(run.glob("*-epoch1.*"))
    first = json.loads((run / "eval-test-n4-K2-seed0.json").read_text())
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2", "--eval-samples", "0"] + flags) == 0
    assert cli.main(evaluate) == 0
    assert json.loads((run / "eval-test-n4-K2-seed0.json").read_text())["epoch"] == 2
    kept = json.loads((run / "eval-test-n4-K2-seed0-epoch1.json").read_text())
    assert kept.pop("report_md") == first.pop("report_md").replace("seed0.png)", "seed0-epoch1.png)") and kept == first
    assert (run / "eval-test-n4-K2-seed0-epoch1.npz").is_file() and (run / "gaps-test-n4-K2-seed0-epoch1.png").is_file()
