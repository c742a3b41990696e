"""Reliability, round 2: a checkpoint damaged inside, the operating system's refusals, memory,
signals and stale locks each give one line and exit status 2 (or the signal's status) and change
nothing a user made."""

import errno
import json
import os
import signal
import socket
import struct
import time
import zlib

import pytest
import torch

from vaezoo import cli, resources, runlock
from vaezoo.errors import CheckpointError

# the one-epoch run on digits, its fixtures and the refusal check, shared with the run guarantees' tests
from test_run_guarantees import TINY, hashes, offline, refused, run, trained  # noqa: E402,F401

RESUME = ["--epochs", "2", "--eval-samples", "0", "--quiet", "--device", "cpu"]


# ----------------------------------------------------------------------------- a checkpoint damaged inside
def _first(state):
    return next(k for k, v in state["objective"].items() if isinstance(v, torch.Tensor) and v.is_floating_point())


DAMAGE = {
    "rng of the wrong size": (lambda s: s["rng"].update(torch=s["rng"]["torch"][:100]), "rng['torch'] holds 100 bytes"),
    "rng without its key": (lambda s: s.update(rng={}), "rng has no 'torch' state"),
    "rng of the wrong type": (lambda s: s["rng"].update(torch=torch.zeros(5056)), "rng['torch'] is a tensor"),
    "empty optimizer state": (lambda s: s.update(optimizer={}), "optimizer has the keys []"),
    "mis-shaped optimizer state": (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(3)),
                                   "optimizer['state'][0]['exp_avg'] has shape [3]"),
    "optimizer missing a parameter": (lambda s: s["optimizer"]["param_groups"][0]["params"].pop(),
                                      "optimizer steps 11 parameters; the model has 12"),
    "history of strings": (lambda s: s.update(history=["epoch one"]), "history[0] is 'epoch one', not a record"),
    "history record without its loss": (lambda s: s["history"][0].pop("train_loss"), "history[0] has no 'train_loss'"),
    "history longer than the epochs": (lambda s: s["history"].append(dict(s["history"][0], epoch=2)),
                                       "history holds 2 epochs but epoch is 1"),
    "non-finite weight": (lambda s: s["objective"][_first(s)].view(-1).__setitem__(0, float("nan")), "holds non-finite values"),
    "non-finite moment": (lambda s: s["optimizer"]["state"][0]["exp_avg_sq"].view(-1).__setitem__(0, float("inf")),
                          "holds non-finite values"),
    "a field vaezoo never writes": (lambda s: s.update(extra=1), "has a field 'extra' that vaezoo never writes"),
    "param store of the wrong layout": (lambda s: s.update(param_store={"params": []}), "param_store has the keys"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_refused_before_anything_is_written(run, damage, capsys):
    change, match = DAMAGE[damage]
    state = torch.load(run / "checkpoint.pt", weights_only=False)  # our own test file
    change(state)
    torch.save(state, run / "checkpoint.pt")
    before = hashes(run)
    for argv in (["train", "--resume", "--out", str(run)] + RESUME,
                 ["evaluate", str(run), "--n", "4", "--samples", "2", "--quiet", "--device", "cpu"],
                 ["sample", str(run), "--n", "2", "--device", "cpu"]):
        line = refused(argv, capsys, match)
        assert "is damaged" in line or "never writes" in line or "does not fit model 'vae'" in line
    assert hashes(run) == before  # config.json, metrics.jsonl and checkpoint.pt untouched
    assert not (run / runlock.LOCK).exists()


def test_the_checkpoint_check_is_a_table(run):
    """A new field is one row: a checkpoint holding every row's field passes, one lacking it fails."""
    from vaezoo.inference import checkpoint_fields

    assert set(checkpoint_fields.FIELDS) == {"objective", "param_store", "optimizer", "epoch", "history", "rng", "metadata"}
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    checkpoint_fields.validate(state, "ckpt")
    state["rng_ranks"] = [state["rng"], {"torch": torch.zeros(3, dtype=torch.uint8)}]
    with pytest.raises(CheckpointError, match=r"checkpoint ckpt is damaged: rng_ranks\[1\]\['torch'\] holds 3 bytes"):
        checkpoint_fields.validate(state, "ckpt")


# ----------------------------------------------------------------------------- the operating system
LONG = "a" * 300


def test_a_name_longer_than_the_file_system_allows(run, tmp_path, capsys):
    refused(["train", "--out", str(tmp_path / LONG)] + TINY, capsys, "longer than the file system allows")
    refused(["train", "--resume", "--out", str(tmp_path / LONG)] + RESUME, capsys, "longer than the file system allows")
    refused(["evaluate", str(tmp_path / LONG), "--device", "cpu"], capsys, "has a name of 300 bytes")
    before = hashes(run)
    refused(["sample", str(run), "--n", "2", "--out", str(tmp_path / (LONG + ".png")), "--device", "cpu"], capsys,
            "longer than the file system allows")
    assert hashes(run) == before and sorted(os.listdir(tmp_path)) == ["run"]


def test_permission_denied_is_one_line_naming_the_path(run, capsys, monkeypatch):
    import tempfile

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    line = refused(["evaluate", str(run), "--n", "4", "--samples", "0", "--quiet", "--device", "cpu"], capsys, "permission denied")
    assert str(run) in line


def _png_header(width, height):
    """The start of a PNG that claims ``width`` x ``height`` pixels (what Pillow reads on open)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_sample_edit_with_a_decompression_bomb(run, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    line = refused(["sample", str(run), "--edit", str(bomb), str(bomb), "--out", str(tmp_path / "e.png"), "--device", "cpu"],
                   capsys, "too large an image to decode")
    assert str(bomb) in line and "expected a 8x8 PNG" in line


def test_a_config_nested_too_deeply(run, tmp_path, capsys):
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    before = hashes(run)
    refused(["evaluate", str(run), "--device", "cpu"], capsys, "nested too deeply")
    refused(["train", "--resume", "--out", str(run)] + RESUME, capsys, "nested too deeply")
    refused(["train", "--out", str(run)] + TINY, capsys, "is a non-empty directory that is not a vaezoo run")
    assert hashes(run) == before


# ----------------------------------------------------------------------------- memory
def test_a_model_too_large_for_the_machine_is_refused_before_it_is_built(tmp_path, capsys):
    line = refused(["train", "--set", "hidden=65536,65536", "--out", str(tmp_path / "big")] + TINY, capsys,
                   "hidden=65536,65536 has")
    assert "parameters: training needs about" in line and not (tmp_path / "big").exists()


def test_particles_too_many_for_the_memory_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda device: 512 * 2**20)
    line = refused(["train", "--model", "iwae", "--set", "num_particles=65536", "--batch-size", "64",
                    "--out", str(tmp_path / "iwae")] + TINY, capsys, "num_particles=65536 and batch size 64")
    assert "512.0 MiB" in line and not (tmp_path / "iwae").exists()


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 26843545600 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.00 GiB (GPU 0; 79.1 GiB total capacity)"),
])
def test_out_of_memory_in_training_leaves_no_run_behind(tmp_path, capsys, monkeypatch, failure):
    from vaezoo.inference import Trainer

    def fit(self, *args, **kwargs):
        assert (tmp_path / "iwae" / "config.json").exists()
        raise failure

    monkeypatch.setattr(Trainer, "fit", fit)
    assert cli.main(["train", "--model", "iwae", "--set", "num_particles=7", "--out", str(tmp_path / "iwae")] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("training iwae")  # the run had started: then one line says what happened
    assert len(err) == 2 and err[1].startswith("vaezoo train: error: out of memory while training iwae"), err
    line = err[1]
    print(line)
    assert "num_particles=7" in line and "batch size 128" in line and "another 25.0 GiB" in line
    assert not (tmp_path / "iwae").exists()


def test_out_of_memory_in_evaluate_changes_nothing(run, capsys, monkeypatch):
    from vaezoo.inference import Trainer

    def evaluate(self, *args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1073741824 bytes.")

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    before = hashes(run)
    line = refused(["evaluate", str(run), "--n", "4", "--samples", "5", "--quiet", "--device", "cpu"], capsys,
                   "out of memory while evaluating vae")
    assert "--samples 5" in line and "another 1.0 GiB" in line
    assert hashes(run) == before


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_with_a_seed_is_reproducible(run, capsys):
    argv = ["evaluate", str(run), "--n", "30", "--samples", "0", "--seed", "5", "--quiet", "--device", "cpu"]
    assert cli.main(argv) == 0
    first = json.loads((run / "eval-test-n30-K0-seed5.json").read_text())
    torch.rand(7)  # the global generator moves on between the two
    assert cli.main(argv) == 0
    again = json.loads((run / "eval-test-n30-K0-seed5.json").read_text())
    assert first["objective_elbo"] == again["objective_elbo"]
    assert first["objective_terms"] == again["objective_terms"]


def test_evaluate_removes_the_parts_a_killed_evaluation_left(run):
    for name in (".eval-test-n4-K0-seed0.json.x1y2.part", ".report.md.abcd.part"):
        (run / name).write_bytes(b"half a file")
    assert cli.main(["evaluate", str(run), "--n", "4", "--samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert not [p for p in os.listdir(run) if p.endswith(".part")]


def test_fid_on_data_that_are_not_28x28_is_refused_before_importance_sampling(run, capsys, monkeypatch):
    from vaezoo import evaluation

    def never(*args, **kwargs):
        raise AssertionError("log p(x) estimated before --fid was checked")

    monkeypatch.setattr(evaluation, "log_marginal", never)
    before = hashes(run)
    refused(["evaluate", str(run), "--fid", "--samples", "1000", "--quiet", "--device", "cpu"], capsys,
            "makes data of shape (1, 8, 8); expected (1, 28, 28)")
    assert hashes(run) == before


def test_an_empty_layer_size_is_refused(tmp_path, capsys):
    refused(["train", "--set", "hidden=300,,100", "--out", str(tmp_path / "r")] + TINY, capsys, "hidden='300,,100'")
    refused(["train", "--set", "hidden=300,", "--out", str(tmp_path / "r")] + TINY, capsys, "hidden='300,'")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- signals and locks
def test_sigterm_is_handled_like_ctrl_c(run, capsys, monkeypatch):
    from vaezoo.inference import Trainer

    before = (run / "checkpoint.pt").read_bytes()

    def preempted(self, *args, **kwargs):
        assert (run / runlock.LOCK).exists()
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends on preemption
        time.sleep(10)
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(Trainer, "fit", preempted)
    previous = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--resume", "--out", str(run)] + RESUME) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert "interrupted; the last checkpoint is kept (SIGTERM" in err[-1]
    assert not (run / runlock.LOCK).exists() and (run / "checkpoint.pt").read_bytes() == before
    assert signal.getsignal(signal.SIGTERM) == previous  # put back after the command


def _lock(run, **owner):
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": "someone else", **owner}
    (run / runlock.LOCK).write_text(json.dumps(owner))


def _own_start():
    return runlock._start_time(os.getpid())


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_lock_whose_pid_now_names_another_process_is_taken_over(run, capsys):
    _lock(run, start=_own_start())  # this very process: alive, so refused
    refused(["evaluate", str(run), "--n", "2", "--samples", "0", "--device", "cpu"], capsys, f"in use by process {os.getpid()}")
    _lock(run, start=_own_start() - 1)  # the pid's process started at another time: the owner is gone
    assert cli.main(["evaluate", str(run), "--n", "2", "--samples", "0", "--quiet", "--device", "cpu"]) == 0
    assert not (run / runlock.LOCK).exists()


@pytest.mark.skipif(not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="needs /proc")
def test_a_lock_from_before_a_reboot_is_taken_over(run):
    _lock(run, boot="another-boot")
    assert cli.main(["evaluate", str(run), "--n", "2", "--samples", "0", "--quiet", "--device", "cpu"]) == 0


def test_a_lock_from_another_host_is_taken_over_once_its_heartbeat_stops(run, capsys):
    _lock(run, pid=1, host="elsewhere.example", heartbeat=30.0)
    line = refused(["train", "--resume", "--out", str(run)] + RESUME, capsys, "in use by process 1 on elsewhere.example")
    assert "last heartbeat 0.0 min ago; taken over once 10 min pass without one" in line
    old = time.time() - runlock.STALE_AFTER_S - 60
    _lock(run, pid=1, host="elsewhere.example")  # an owner that never beats: never judged by its age
    os.utime(run / runlock.LOCK, (old, old))
    refused(["train", "--resume", "--out", str(run)] + RESUME, capsys, "a lock without a heartbeat is never taken over from another host")
    _lock(run, pid=1, host="elsewhere.example", heartbeat=30.0)  # the preempted job's, silent for 11 minutes
    os.utime(run / runlock.LOCK, (old, old))
    assert cli.main(["train", "--resume", "--out", str(run)] + RESUME) == 0
    assert not (run / runlock.LOCK).exists()


def test_the_owner_beats_while_it_holds_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    lock = runlock.RunLock(tmp_path / "r").acquire()
    try:
        owner = json.loads(lock.path.read_text())
        assert owner["heartbeat"] == 0.05 and owner["start"] == _own_start()
        os.utime(lock.path, (0, 0))
        deadline = time.time() + 5
        while lock.path.stat().st_mtime == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert time.time() - lock.path.stat().st_mtime < 5
    finally:
        lock.release()
    assert not lock.path.exists()


@pytest.mark.slow  # a process of its own: ~5-30 s of start-up
def test_sigterm_to_a_training_process(tmp_path, signal_when_checkpointed):
    """The real thing: a `vaezoo train` process preempted between epochs exits 143 with one line,
    keeps a checkpoint that resumes, and leaves no lock."""
    import sys

    run = tmp_path / "preempted"
    argv = [sys.executable, "-m", "vaezoo", "train", "--out", str(run), "--dataset", "digits", "--n-train", "64",
            "--epochs", "100000", "--eval-samples", "0", "--quiet", "--device", "cpu",
            "--no-compile"]  # eager: this is about the signal, not about compiling (seconds of it)
    returncode, err = signal_when_checkpointed(argv, run / "checkpoint.pt", signal.SIGTERM, start_timeout=600, stop_timeout=300)
    assert returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("vaezoo train: interrupted; the last checkpoint is kept (SIGTERM")
    assert not (run / runlock.LOCK).exists() and not list(run.glob(".*.part"))
    from vaezoo import runs

    runs.load_trained(run, torch.device("cpu"))  # whole, and checked
