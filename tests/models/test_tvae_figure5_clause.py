"""``bench/tvae_figure5.py``'s reading of its cached runs: each entry's reconstruction error minus the
``vae``'s paired by seed, the flatness rule on a run continued from one cached before the script
recorded a test ELBO, and a longer cached run refused rather than reported under a shorter label."""

import json

import pytest

from vaezoo.compare.measures import convergence
from vaezoo.errors import CheckpointError, RunError


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("tvae_figure5")


def test_differences_are_paired_by_seed_with_the_vae_of_the_same_total(bench):
    rows = [dict(model=m, total=t, seed=s, recon_error=v) for m, t, s, v in [
        ("vae", 20, 0, 83.0), ("vae", 20, 1, 84.0), ("vae", 30, 0, 82.0),
        ("tvae-affine", 20, 0, 78.0), ("tvae-affine", 20, 1, 77.5), ("tvae-affine", 20, 2, 70.0),  # seed 2: no vae
        ("tvae-affine", 30, 0, 77.0)]]
    assert bench.paired(rows) == {("tvae-affine", 20): {0: -5.0, 1: -6.5}, ("tvae-affine", 30): {0: -5.0}}


def test_a_continued_run_reads_its_flatness_where_the_tenth_s_ends_were_recorded():
    old = [{"epoch": e, "train_loss": 100.0 - e} for e in range(1, 11)]  # cached before test ELBOs were recorded
    new = [{"epoch": e, "train_loss": 100.0 - e, "test_elbo": -90.0 + 0.02 * e} for e in range(11, 21)]
    curve = convergence(old + new, 0.1)  # 20 epochs: the last tenth is epochs 18 -> 20
    assert curve["rise"] == pytest.approx(0.04) and curve["flag"] == "converged"
    short = [{"epoch": e, "train_loss": 1.0} for e in range(1, 10)] + [{"epoch": 10, "train_loss": 1.0, "test_elbo": -90.0}]
    assert convergence(short, 0.1)["flag"] == "not recorded"  # epoch 9 has no test ELBO


def test_a_longer_cached_run_is_refused_in_one_line(bench, tmp_path):
    class Args:
        out, pose_prior, epochs, data, samples, eval_n, no_train = str(tmp_path), "none", 10, "mnist", 5, 3, False
    run = tmp_path / "vae-total20-seed0"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e}) for e in range(1, 21)) + "\n")
    with pytest.raises(RunError, match=r"holds a run trained 20 epochs; expected at most --epochs 10") as e:
        bench.run_one("vae", 20, 0, Args(), None, None)
    assert "\n" not in str(e.value)


class _Args:
    pose_prior, data, samples, eval_n, no_train, lr = "none", "mnist-small", 5, 3, False, 1e-3

    def __init__(self, out, epochs, **kw):
        self.out, self.epochs, self.models, self.totals, self.seeds = str(out), epochs, ["vae"], [20], [0]
        self.__dict__.update(kw)


def _data(n):
    from vaezoo import data
    train = data.load("mnist-small", split="train", binarize="dynamic")
    test = data.load("mnist-small", split="test", binarize="fixed")
    train.data, test.data = train.data[:n], test.data[:n]
    return train, test


def test_a_shorter_cached_run_is_continued_to_the_longer_one_and_read_by_the_clause(bench, tmp_path):
    """1 then 2 epochs in one folder: the second call continues the checkpoint (labelled as continued,
    equal to a run trained 2 epochs straight), and the clause's reader finds the 1-epoch result
    whatever K it was evaluated with; a run of other data in the folder is refused, not continued."""
    train, test = _data(200)
    first = bench.run_one("vae", 20, 0, _Args(tmp_path / "a", 1), train, test)
    second = bench.run_one("vae", 20, 0, _Args(tmp_path / "a", 2), train, test)
    straight = bench.run_one("vae", 20, 0, _Args(tmp_path / "b", 2), train, test)
    assert first["continued_from"] is None and second["continued_from"] == 1 and straight["continued_from"] is None
    assert second["recon_error"] == pytest.approx(straight["recon_error"], rel=1e-6)
    assert bench.cached_rows(_Args(tmp_path / "a", 2, samples=500), 1) == [first]  # cached at K = 5
    with pytest.raises(CheckpointError, match="checkpoint of data 'mnist-small', not 'mnist'"):
        bench.run_one("vae", 20, 0, _Args(tmp_path / "a", 3, data="mnist"), train, test)
