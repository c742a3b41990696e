"""The command line end to end on tiny budgets, and every bad input: one line, exit code 2."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vaezoo import cli, cli_train, provenance, runs, zoo
from vaezoo.data import download


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download, "urlopen", refuse)


TINY = ["--epochs", "1", "--n-train", "256", "--eval-samples", "8", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert cli.main(["train", "--out", str(out)] + TINY) == 0
    return out


def test_main_job_writes_the_run(run_dir, capsys):
    for name in ["config.json", "metrics.jsonl", "checkpoint.pt", "samples.png", "reconstructions.png", "report.md", "eval.json"]:
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"] == "vae" and cfg["dataset"] == "mnist-small" and cfg["data_shape"] == [1, 28, 28]
    assert cfg["vaezoo_commit"] == provenance.source_commit()  # which code made the run
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1]
    # the trainer's test ELBO (closed-form KL, one draw per image) and the importance sampler's
    # (mean log-weight of --eval-samples 8 draws) estimate the same number on the same 2000 test images;
    # 1 nat is about 10 standard errors of their difference at this size
    elbo_is = json.loads((run_dir / "eval.json").read_text())["elbo"]["mean"]
    assert abs(metrics[0]["test_elbo"] - elbo_is) < 1.0, (metrics[0]["test_elbo"], elbo_is)
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["num_data"] == 2000
    # one key for each number, each number labelled; no empty IWAE-k object
    assert not {"num_datapoints", "wall_time_s", "iwae"} & set(ev) and ev["seconds"] > 0
    assert set(ev["meaning"]) >= {"objective_elbo", "elbo", "log_px", "gap", "khat"}
    assert "training objective" in ev["meaning"]["objective_elbo"] and "conditional" not in ev["meaning"]["log_px"]
    report = (run_dir / "report.md").read_text()
    assert "test ELBO" in report and "samples.png" in report
    assert (run_dir / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_sample_evaluate(run_dir, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2", "--n-train", "256", "--eval-samples", "0", "--quiet", "--device", "cpu"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert cli.main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "s.png").is_file()
    assert cli.main(["evaluate", str(run), "--samples", "16", "--n", "20", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ELBO" in out
    # the subset gets a file named by its settings; the full evaluation of training stays in eval.json
    sub = json.loads((run / "eval-test-n20-K16-seed0.json").read_text())
    assert sub["num_data"] == 20 and sub["num_samples"] == 16 and sub["epoch"] == 2
    assert json.loads((run / "eval.json").read_text())["num_data"] == 2000
    report = (run / "report.md").read_text()
    assert "eval.json" in report and "eval-test-n20-K16-seed0.json" in report
    # AIS through the common estimator API: its summary is the result's to_dict()
    assert cli.main(["evaluate", str(run), "--samples", "8", "--ais", "3", "--n", "4", "--quiet", "--device", "cpu"]) == 0
    ais = json.loads((run / "eval-test-n4-K8-seed0-ais3.json").read_text())["ais"]
    assert ais["steps"] == 3 and "num_datapoints" not in ais and ais["log_px"]["mean"] < 0


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "vae" in out and "iwae" in out and "mnist-small" in out


def bad(argv, capsys, match):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert "Traceback" not in err[0]


def test_unknown_model_and_dataset(capsys, tmp_path):
    bad(["train", "--model", "nope", "--out", str(tmp_path / "a")], capsys, "unknown model 'nope'")
    bad(["train", "--dataset", "nope", "--out", str(tmp_path / "b")], capsys, "unknown dataset")


def test_data_dir_without_files(capsys, tmp_path):
    bad(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")] + TINY, capsys,
        str(tmp_path / "mnist"))


def test_data_outside_support(capsys, tmp_path):
    bad(["train", "--set", "binarize=none", "--out", str(tmp_path / "r")] + TINY, capsys, "outside the support of the Bernoulli")


def test_bad_set(capsys, tmp_path):
    bad(["train", "--set", "latent_dim=abc", "--out", str(tmp_path / "r")], capsys, "latent_dim='abc'")
    bad(["train", "--set", "nofield=1", "--out", str(tmp_path / "r")], capsys, "no config field 'nofield'")


def test_missing_run(capsys, tmp_path):
    bad(["evaluate", str(tmp_path / "nope")], capsys, "does not exist")
    bad(["sample", str(tmp_path / "nope")], capsys, "does not exist")
    bad(["train", "--resume", "--out", str(tmp_path / "nope")], capsys, "does not exist")


def test_checkpoint_of_another_model(run_dir, capsys, tmp_path):
    run = tmp_path / "other"
    shutil.copytree(run_dir, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["latent_dim"] = 7
    (run / "config.json").write_text(json.dumps(cfg))
    bad(["evaluate", str(run), "--device", "cpu"], capsys, "does not fit model 'vae'")
    cfg["model"] = "iwae"
    cfg["config"]["latent_dim"] = 50
    (run / "config.json").write_text(json.dumps(cfg))
    bad(["evaluate", str(run), "--device", "cpu"], capsys, "checkpoint of 'vae'")


def test_corrupt_and_truncated_checkpoint(run_dir, capsys, tmp_path):
    run = tmp_path / "trunc"
    shutil.copytree(run_dir, run)
    blob = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(blob[: len(blob) // 3])
    bad(["evaluate", str(run), "--device", "cpu"], capsys, "corrupt or truncated")
    (run / "checkpoint.pt").write_bytes(b"\x00" * 100)
    bad(["sample", str(run), "--device", "cpu"], capsys, "corrupt or truncated")


def test_exit_code_and_no_traceback_in_a_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "vaezoo", "train", "--model", "nope", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "unknown model 'nope'" in r.stderr


@pytest.mark.slow  # four torchrun launches: about a minute
def test_train_and_resume_under_torchrun(tmp_path):
    """The main job data-parallel in two processes (torchrun, Gloo on CPU), then resumed, then
    evaluated sharded over the two processes."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    run = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vaezoo", "train",
            "--n-train", "300", "--eval-samples", "0", "--quiet", "--out", str(run)]
    # a failing process's own message comes before torchrun's long summary: show both
    shown = lambda r: r.stderr if len(r.stderr) < 5000 else r.stderr[:3000] + "\n[...]\n" + r.stderr[-2000:]  # noqa: E731
    r = subprocess.run(base + ["--epochs", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, shown(r)
    assert "2 processes" in r.stderr and r.stdout.count("run directory:") == 1  # rank 0 alone reports
    r = subprocess.run(base + ["--epochs", "2", "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, shown(r)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2] and (run / "samples.png").exists()
    # the evaluation sharded over 2 processes (17 test images in chunks of 16: shards of 16 and 1)
    # gives one process's per-datapoint numbers to the last bit, each datapoint once, at the same
    # threads per process (a matrix product's rounding may depend on how many threads share it)
    evaluate = ["evaluate", str(run), "--samples", "100", "--n", "17", "--quiet", "--threads", "1"]
    assert cli.main(evaluate) == 0
    name = "eval-test-n17-K100-seed0"
    one = dict(np.load(run / f"{name}.npz"))
    r = subprocess.run(base[:base.index("train")] + ["--"] + evaluate, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, shown(r)
    assert r.stdout.count(f"{name}.json") == 1  # rank 0 alone writes
    two = np.load(run / f"{name}.npz")
    assert set(two.files) == set(one) and all(np.array_equal(one[k], two[k], equal_nan=True) for k in one)
    assert json.loads((run / f"{name}.json").read_text())["processes"] == 2


def test_evaluate_refuses_what_it_cannot_shard(tmp_path, monkeypatch, capsys):
    """Under torchrun, --ais and --fid are refused in one line before any process group is joined."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["evaluate", str(tmp_path), "--ais", "10"]) == 2
    assert "--ais is not sharded over processes" in capsys.readouterr().err


def test_vector_data_and_a_deterministic_encoder(tmp_path, capsys):
    """Vector data (the synthetic benchmark) get tiles for pictures; a pair with a point-mass guide
    trains, and the run says why its log p(x) was not estimated instead of failing."""
    run = tmp_path / "mask"
    assert cli.main(["train", "--model", "mask-aae", "--dataset", "synthetic", "--epochs", "1", "--n-train", "128",
                     "--eval-samples", "10", "--quiet", "--device", "cpu", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "log p(x) not estimated" in err and "point mass" in err
    for name in ("checkpoint.pt", "samples.png", "reconstructions.png", "report.md"):
        assert (run / name).is_file(), name
    assert not (run / "eval.json").exists()
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["epoch"] == 1 and metrics["test_active_dims"] in range(0, 17)  # mask-aae's default 16 codes


@pytest.mark.parametrize("flags, threshold, expected", [
    ([], 10_000, False),  # 2 steps: too short to pay for compiling
    ([], 2, True),  # as long as the threshold: compiled
    (["--no-compile"], 2, False),
    (["--compile"], 10_000, True),
])
def test_train_compiles_long_runs_unless_told(tmp_path, monkeypatch, flags, threshold, expected):
    """Without --compile/--no-compile, train compiles a run of at least COMPILE_AUTO_STEPS steps
    (epochs x batches), records the choice in config.json and keeps it on resume. The objective is
    built eagerly here (the compiled path itself is tested in tests/inference/test_compile.py)."""
    from vaezoo import zoo

    asked = []
    build = zoo.ZooModel.objective

    def eager(self, compile=False):
        asked.append(compile)
        return build(self, compile=False)

    monkeypatch.setattr(zoo.ZooModel, "objective", eager)
    monkeypatch.setattr(cli_train, "COMPILE_AUTO_STEPS", threshold)
    run = tmp_path / "run"
    args = ["--epochs", "1", "--n-train", "256", "--eval-samples", "0", "--quiet", "--device", "cpu"]
    assert cli.main(["train", "--out", str(run)] + args + flags) == 0
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is expected
    assert asked == [expected]
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2", "--eval-samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert asked[-1] is expected  # the resumed run trains with the recorded choice (the load before it is eager)


@pytest.mark.parametrize("name", zoo.names())
def test_show_prints_every_config_field_with_what_it_takes(name, capsys):
    assert cli.main(["show", name]) == 0
    out = capsys.readouterr().out
    for field, takes, _ in zoo.fields(name):
        assert any(line.split()[:1] == [field] and takes in line for line in out.splitlines()), (field, out)


def test_show_refuses_an_unknown_entry_in_one_line(capsys):
    assert cli.main(["show", "no-such-vae"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-vae" in err[0]


def test_a_run_draws_its_learning_curves(run_dir):
    png = run_dir / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curves_show_every_number_the_epochs_recorded(tmp_path):
    from vaezoo.evaluation.report import plot_curves

    history = [{"epoch": e, "train_loss": 10.0 / e, "test_loss": 11.0 / e, "test_elbo": -11.0 / e, "lr": 1e-3,
                "seconds": 1.0} for e in (1, 2, 3)]
    path = plot_curves(history, tmp_path / "curves.png")
    from PIL import Image

    width, height = Image.open(path).size
    assert width > height  # the loss panel and two more (test_elbo, lr) side by side
    assert not [p for p in tmp_path.iterdir() if p.name != "curves.png"]



def test_a_reader_that_leaves_early_gets_no_error(monkeypatch, capsys):
    """``vaezoo list | head -1``: the pipe closes under the command, which stops quietly (exit 0)."""
    import io

    class ClosedPipe(io.StringIO):
        def fileno(self):  # where the command silences the rest of its output
            return self.devnull

        devnull = os.open(os.devnull, os.O_WRONLY)

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().err == ""


def test_a_run_records_the_commits_that_started_and_resumed_it(run_dir, tmp_path, monkeypatch):
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["vaezoo_commit"] = "aaaaaaaaaaaa"  # as if another commit (and torch) had started it
    cfg["torch_version"] = "2.0.0"
    (run / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(provenance, "source_commit", lambda: "bbbbbbbbbbbb")
    resume = ["train", "--out", str(run), "--resume", "--n-train", "256", "--eval-samples", "0", "--quiet", "--device", "cpu"]
    assert cli.main(resume + ["--epochs", "2"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["vaezoo_commit"], cfg["resumed_by_commits"]) == ("aaaaaaaaaaaa", ["bbbbbbbbbbbb"])
    assert cfg["torch_version"] == "2.0.0"  # the versions that started the run, as the commit
    assert cli.main(resume + ["--epochs", "3"]) == 0  # the same commit again: recorded once
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resumed_by_commits"] == ["bbbbbbbbbbbb"] and cfg["train"]["epochs"] == 3
    assert runs.code_of(cfg) == "aaaaaaaaaaaa (resumed by bbbbbbbbbbbb)"
    assert "trained by commit aaaaaaaaaaaa (resumed by bbbbbbbbbbbb)" in (run / "report.md").read_text()
    assert runs.code_of({"vaezoo_version": "0.1.0"}) is None  # a run older than the record
    assert runs.code_of({"vaezoo_commit": "aaaaaaaaaaaa", "resumed_by_commits": [None]}) == (
        "aaaaaaaaaaaa (resumed by a commit not recorded)")  # resumed from outside a checkout


def test_a_new_run_ignores_a_config_left_in_its_directory(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    left = {"model": "vae", "config": {}, "data_shape": [1, 28, 28], "dataset": "mnist-small", "train": {"epochs": 1},
            "vaezoo_commit": "aaaaaaaaaaaa"}  # as a run killed before its first checkpoint leaves it
    (run / "config.json").write_text(json.dumps(left))
    monkeypatch.setattr(provenance, "source_commit", lambda: "bbbbbbbbbbbb")
    assert cli.main(["train", "--out", str(run), "--n-train", "256", "--eval-samples", "0", "--quiet", "--device", "cpu",
                     "--epochs", "1"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["vaezoo_commit"] == "bbbbbbbbbbbb" and "resumed_by_commits" not in cfg
