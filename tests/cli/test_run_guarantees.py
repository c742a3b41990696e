"""What a run directory guarantees, through the command line as a user runs it: every value is
checked before anything is written, a refusal is one line with exit status 2 and leaves the files
as they were, one process owns a run at a time, and a checkpoint cannot run code."""

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from vaezoo import cli, runlock, zoo
from vaezoo.data import download
from vaezoo.errors import ConfigError

TINY = ["--dataset", "digits", "--n-train", "64", "--epochs", "1", "--eval-samples", "0", "--quiet", "--device", "cpu"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(download, "urlopen", refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli.main(["train", "--out", str(out)] + TINY) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of a one-epoch run on digits."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def hashes(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def refused(argv, capsys, match):
    """Runs the CLI in-process: exit status 2 and exactly one line on stderr containing ``match``."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    return err[0]


# ----------------------------------------------------------------------------- values at the door
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--clip-norm", "-1"], "--clip-norm=-1.0;"),
        (["--clip-norm", "0"], "--clip-norm=0.0;"),
        (["--clip-norm", "nan"], "--clip-norm=nan;"),
        (["--lr", "0"], "--lr=0.0;"),
        (["--lr", "inf"], "--lr=inf;"),
        (["--epochs", "0"], "--epochs=0;"),
        (["--epochs", "two"], "invalid int value: 'two'"),
        (["--batch-size", "0"], "--batch-size=0;"),
        (["--seed", "-1"], "--seed=-1;"),
        (["--seed", str(2**32)], f"--seed={2**32};"),
        (["--eval-samples", "-1"], "--eval-samples=-1;"),
        (["--device", "meta"], "--device 'meta' is not supported"),
        (["--device", "mps"], "--device 'mps' is not supported"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:999"], "cuda"),
        (["--set", "binarize=none"], "outside the support of the Bernoulli"),
        (["--set", "latent_dim=abc"], "latent_dim='abc'"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/nodata"], "nodata"),
    ],
)
def test_bad_train_values_are_refused_before_anything_is_written(flags, match, capsys, tmp_path):
    out = tmp_path / "new" / "run"
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    refused(["train", "--out", str(out)] + TINY + flags, capsys, match)
    assert not (tmp_path / "new").exists()  # no half-made run


@pytest.mark.parametrize("setting", ["activation=foo", "hidden=-5,3"])
def test_config_fields_checked_by_the_zoo_before_anything_is_written(setting, capsys, tmp_path):
    refused(["train", "--out", str(tmp_path / "r"), "--set", setting] + TINY, capsys, setting.split("=")[0])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("field, value", [("latent_dim", 2.5), ("activation", "foo"), ("hidden", [-5, 3])])
def test_hand_edited_model_config_is_checked_by_the_zoo(run, field, value, capsys):
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"][field] = value
    (run / "config.json").write_text(json.dumps(cfg))
    before = hashes(run)
    refused(["evaluate", str(run), "--device", "cpu"], capsys, field)
    refused(["train", "--resume", "--out", str(run), "--quiet", "--device", "cpu"], capsys, field)
    assert hashes(run) == before


def test_evaluate_and_sample_values(run, capsys):
    before = hashes(run)
    refused(["evaluate", str(run), "--n", "0"], capsys, "--n=0;")
    refused(["evaluate", str(run), "--samples", "-1"], capsys, "--samples=-1;")
    refused(["evaluate", str(run), "--ais", "-2"], capsys, "--ais=-2;")
    refused(["evaluate", str(run), "--seed", "-1"], capsys, "--seed=-1;")
    refused(["sample", str(run), "--n", "0"], capsys, "--n=0;")
    refused(["sample", str(run), "--n", str(10**9)], capsys, f"--n={10**9};")
    refused(["sample", str(run), "--out", str(run)], capsys, "is a directory; expected the path of a PNG file")
    refused(["sample", str(run), "--out", str(run / "config.json" / "x.png")], capsys, "lies under the file")
    refused(["evaluate", str(run / "config.json")], capsys, "config.json is not a directory")
    refused(["sample", str(run / "config.json")], capsys, "config.json is not a directory")
    assert hashes(run) == before


# ----------------------------------------------------------------------------- --out
def test_out_that_is_not_a_new_run(run, capsys, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "report.md").write_text("my report")
    before = hashes(mine)
    refused(["train", "--out", str(mine)] + TINY, capsys, "is a non-empty directory that is not a vaezoo run")
    assert hashes(mine) == before and sorted(os.listdir(mine)) == ["config.json", "report.md"]

    monkeypatch.chdir(mine)  # --out "" and --out . would write into the current directory
    refused(["train", "--out", ""] + TINY, capsys, "is the current directory")
    refused(["train", "--out", "."] + TINY, capsys, "is the current directory")
    assert hashes(mine) == before

    refused(["train", "--out", str(mine / "report.md")] + TINY, capsys, "is a file; expected a directory")
    refused(["train", "--out", str(mine / "report.md" / "run")] + TINY, capsys, "lies under the file")
    refused(["train", "--out", str(run)] + TINY, capsys, "already holds a run; pass --resume")
    assert hashes(mine) == before


def test_read_only_parent(capsys, tmp_path, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: make mkdir fail as it does for everyone else

        def mkdir(path, mode=0o777, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        refused(["train", "--out", str(parent / "run")] + TINY, capsys, "cannot create the run directory")
    finally:
        parent.chmod(0o755)
    assert os.listdir(parent) == []


# ----------------------------------------------------------------------------- the lock
def _lock(run, pid, host=None):
    run.mkdir(exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "token": "someone else"}
    (run / runlock.LOCK).write_text(json.dumps(owner))


def test_second_process_is_refused_naming_the_owner(run, tmp_path, capsys):
    """A `vaezoo train` process on a run directory owned by a live process (this test's) exits 2
    with one line naming the owner, no traceback, and changes nothing."""
    _lock(run, os.getpid())
    before = hashes(run)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "vaezoo", "train", "--resume", "--out", str(run), "--epochs", "3"] + TINY[6:],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert f"in use by process {os.getpid()} on {socket.gethostname()}" in r.stderr
    assert hashes(run) == before
    fresh = tmp_path / "fresh"  # a new run whose directory another process has just taken
    _lock(fresh, os.getpid())
    refused(["train", "--out", str(fresh)] + TINY, capsys, f"in use by process {os.getpid()}")
    assert os.listdir(fresh) == [runlock.LOCK]  # the owner's lock, untouched, and nothing else


def test_lock_guards_resume_evaluate_and_sample(run, capsys, tmp_path):
    _lock(run, os.getpid())
    before = hashes(run)
    owner = f"in use by process {os.getpid()}"
    refused(["train", "--resume", "--out", str(run), "--epochs", "2"] + TINY[6:], capsys, owner)
    refused(["evaluate", str(run), "--samples", "4", "--device", "cpu"], capsys, owner)
    refused(["sample", str(run), "--device", "cpu"], capsys, owner)  # writes RUN/samples.png
    assert hashes(run) == before
    # a picture written elsewhere only reads the run
    assert cli.main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "s.png").is_file() and hashes(run) == before


def test_stale_lock_of_a_dead_process_is_taken_over(run, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process
    _lock(run, dead.pid)
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2"] + TINY[6:]) == 0
    assert not (run / runlock.LOCK).exists()  # released on exit
    fresh = tmp_path / "fresh"
    _lock(fresh, dead.pid)
    assert cli.main(["train", "--out", str(fresh)] + TINY) == 0
    assert (fresh / "checkpoint.pt").is_file() and not (fresh / runlock.LOCK).exists()


def test_lock_on_another_host_is_not_taken_over(run, capsys):
    _lock(run, 1, host="elsewhere.example")
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "in use by process 1 on elsewhere.example")


def test_lock_released_after_an_error(run, capsys):
    (run / "checkpoint.pt").write_bytes(b"\x00" * 64)  # found only once the lock is held
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "corrupt or truncated")
    refused(["train", "--resume", "--out", str(run), "--epochs", "2", "--quiet", "--device", "cpu"], capsys, "corrupt or truncated")
    assert not (run / runlock.LOCK).exists()


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--lr", "0.01"], "--lr 0.01 differs from the run's lr 0.001"),
        (["--batch-size", "32"], "--batch-size 32 differs from the run's batch_size 128"),
        (["--seed", "3"], "--seed 3 differs from the run's seed 0"),
        (["--clip-norm", "1"], "--clip-norm 1.0 differs from the run's clip_norm None"),
        (["--dtype", "float64"], "--dtype float64 differs from the run's dtype float32"),
        (["--dataset", "mnist-small"], "--dataset mnist-small differs from the run's dataset 'digits'"),
        (["--n-train", "32"], "--n-train 32 differs from the run's n_train 64"),
        (["--compile"], "--compile True differs from the run's compile False"),
        (["--model", "iwae"], "--model iwae does not match the run's model 'vae'"),
        (["--set", "latent_dim=3"], "--set cannot change the config of a run being resumed"),
    ],
)
def test_resume_refuses_a_setting_it_would_not_honour(run, flags, match, capsys):
    before = hashes(run)
    refused(["train", "--resume", "--out", str(run), "--epochs", "3", "--quiet", "--device", "cpu"] + flags, capsys, match)
    assert hashes(run) == before


def test_resume_epochs_below_done_is_refused_and_above_honoured(run, capsys):
    argv = ["train", "--resume", "--out", str(run), "--eval-samples", "0", "--quiet", "--device", "cpu"]
    assert cli.main(argv + ["--epochs", "2"]) == 0
    capsys.readouterr()
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    before = hashes(run)
    refused(argv + ["--epochs", "1"], capsys, "--epochs 1 is below the 2 epochs the run has done")
    assert hashes(run) == before


def test_resume_keeps_config_when_the_checkpoint_does_not_load(run, capsys):
    (run / "checkpoint.pt").write_bytes(b"\x00" * 64)
    before = hashes(run)
    refused(["train", "--resume", "--out", str(run), "--epochs", "5", "--quiet", "--device", "cpu"], capsys, "corrupt or truncated")
    assert hashes(run) == before


def test_stale_parts_are_removed_on_resume(run):
    for name in (".checkpoint.pt.k2j3h4.part", ".metrics.jsonl.abcd.part"):
        (run / name).write_bytes(b"half a file")
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2"] + TINY[6:]) == 0
    assert not [p for p in os.listdir(run) if p.endswith(".part")]


def test_full_disk_while_writing_a_checkpoint(run, capsys, monkeypatch):
    before = (run / "checkpoint.pt").read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2"] + TINY[6:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("training vae")  # the run had started: then one line says what happened
    assert len(err) == 2 and err[1].startswith("vaezoo train: error: the disk is full"), err
    line = err[1]
    assert f"the previous checkpoint {run / 'checkpoint.pt'} is kept unchanged" in line
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not [p for p in os.listdir(run) if p.endswith(".part")] and not (run / runlock.LOCK).exists()


# ----------------------------------------------------------------------------- config.json and checkpoint
@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["train"].update(epochs="ten"), "train.epochs='ten'; expected an integer >= 1"),
        (lambda c: c["train"].update(lr=-1), "train.lr=-1;"),
        (lambda c: c["train"].update(seed=2.5), "train.seed=2.5; expected an integer from 0 to 4294967295"),
        (lambda c: c["config"].update(latent_dim="abc"), "latent_dim='abc'"),
        (lambda c: c["config"].update(nofield=1), "no config field 'nofield'"),
        (lambda c: c.update(data_shape="28x28"), "data_shape='28x28'"),
        (lambda c: c.update(dataset=3), "dataset=3"),
    ],
)
def test_hand_edited_config_is_refused_on_read(run, edit, match, capsys):
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    before = hashes(run)
    refused(["evaluate", str(run), "--device", "cpu"], capsys, match)
    refused(["train", "--resume", "--out", str(run), "--quiet", "--device", "cpu"], capsys, match)
    assert hashes(run) == before


def _rewrite_checkpoint(run, change):
    state = torch.load(run / "checkpoint.pt", weights_only=False)  # our own test file
    change(state)
    torch.save(state, run / "checkpoint.pt")


def test_checkpoint_missing_a_field(run, capsys):
    _rewrite_checkpoint(run, lambda s: s.pop("epoch"))
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "has no 'epoch'")
    refused(["train", "--resume", "--out", str(run), "--quiet", "--device", "cpu"], capsys, "has no 'epoch'")
    _rewrite_checkpoint(run, lambda s: s.update(epoch=-3))
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "has epoch=-3; expected the number of epochs done")
    _rewrite_checkpoint(run, lambda s: s.update(epoch=1, history="none"))
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "has history='none'; expected the per-epoch metrics")


class Payload:
    """Unpickling it would create a file: a stand-in for any code a checkpoint could run."""

    target = None

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_checkpoint_that_would_run_code_is_refused(run, capsys, tmp_path):
    target = tmp_path / "pwned"
    payload = Payload()
    payload.target = target
    _rewrite_checkpoint(run, lambda s: s["metadata"].update(extra=payload))
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "holds objects vaezoo never saves")
    refused(["sample", str(run), "--device", "cpu"], capsys, "refused to load it")
    refused(["train", "--resume", "--out", str(run), "--epochs", "2", "--quiet", "--device", "cpu"], capsys, "refused to load it")
    assert not target.exists()


def test_checkpoint_with_param_store_constraints_loads(run, tmp_path):
    """What a plain-Pyro pair keeps in the param store (constraint objects) is allowed."""
    from pyro.distributions import constraints as pc
    from torch.distributions import constraints as tc

    from vaezoo.inference import checkpoint as ckpt

    store = {"params": {"a": torch.ones(2), "b": torch.ones(3)},
             "constraints": {"a": tc.positive, "b": tc.independent(tc.interval(0.0, 1.0), 1), "c": pc.softplus_positive}}
    _rewrite_checkpoint(run, lambda s: s.update(param_store=store))
    state = ckpt.load(run / "checkpoint.pt")
    assert state["param_store"]["constraints"]["b"].base_constraint.upper_bound == 1.0


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_train_split_of_a_default_run(run, capsys):
    """Dynamically binarized training data are evaluated under the test protocol (one fixed,
    seeded binarization): the same numbers twice."""
    argv = ["evaluate", str(run), "--split", "train", "--n", "40", "--samples", "8", "--quiet", "--device", "cpu"]
    assert cli.main(argv) == 0
    first = json.loads((run / "eval-train-n40-K8-seed0.json").read_text())
    assert cli.main(argv) == 0
    again = json.loads((run / "eval-train-n40-K8-seed0.json").read_text())
    assert first["split"] == "train" and first["num_data"] == 40
    assert first["log_px"] == again["log_px"]


def test_evaluations_are_named_by_their_settings(run, capsys):
    assert cli.main(["evaluate", str(run), "--n", "30", "--samples", "8", "--quiet", "--device", "cpu"]) == 0
    full = (run / "eval-test-n30-K8-seed0.json").read_bytes()
    assert cli.main(["evaluate", str(run), "--n", "3", "--samples", "8", "--quiet", "--device", "cpu"]) == 0
    assert cli.main(["evaluate", str(run), "--n", "3", "--samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert (run / "eval-test-n30-K8-seed0.json").read_bytes() == full  # not replaced by the subset
    assert json.loads((run / "eval-test-n3-K8-seed0.json").read_text())["num_data"] == 3
    assert json.loads((run / "eval-test-n3-K0-seed0.json").read_text())["num_samples"] == 0
    report = (run / "report.md").read_text()
    assert all(name in report for name in ("eval-test-n30-K8-seed0.json", "eval-test-n3-K8-seed0.json", "eval-test-n3-K0-seed0.json"))


def test_of_processes_racing_for_a_stale_lock_one_wins(tmp_path):
    """Threads stand in for processes: all see the same dead owner, exactly one takes over."""
    import threading

    from vaezoo.errors import RunError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "contested"
    _lock(run, dead.pid)
    start, won, lost = threading.Barrier(8), [], []

    def contend():
        lock = runlock.RunLock(run, create=False)
        start.wait()
        try:
            won.append(lock.acquire())
        except RunError as e:
            lost.append(str(e))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7, (won, lost)
    assert json.loads((run / runlock.LOCK).read_text())["token"] == won[0].token
    won[0].release()
    assert os.listdir(run) == []


def test_ctrl_c_releases_the_lock_and_keeps_the_checkpoint(run, capsys, monkeypatch):
    from vaezoo.inference import Trainer

    before = (run / "checkpoint.pt").read_bytes()

    def interrupted(self, *args, **kwargs):
        assert (run / runlock.LOCK).exists()  # held while training
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2"] + TINY[6:]) == 130
    assert "interrupted; the last checkpoint is kept" in capsys.readouterr().err
    assert not (run / runlock.LOCK).exists() and (run / "checkpoint.pt").read_bytes() == before


def test_unreadable_lock_is_taken_over_only_when_old(run, capsys):
    (run / runlock.LOCK).write_text('{"pid": 99999999999999}')  # no valid owner: being written, or junk
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "its lock file is being written or unreadable")
    os.utime(run / runlock.LOCK, (0, 0))  # long past the moment it was created
    assert cli.main(["evaluate", str(run), "--n", "2", "--samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert not (run / runlock.LOCK).exists()
