"""The best checkpoint and early stopping: best.pt holds the best epoch's parameters, patience stops
at the right epoch, and a run resumed in the middle of its patience stops where the uninterrupted
one does, with the same parameters."""

import json

import pytest
import torch

from vaezoo import data, zoo
from vaezoo.errors import CheckpointError, ConfigError
from vaezoo.inference import Trainer
from vaezoo.inference import checkpoint as ckpt


def digits(n=128):
    ds = data.load("digits", split="train", binarize="dynamic")
    ds.data = ds.data[:n]
    return ds


TEST = data.load("digits", split="test", binarize="fixed")


def make_trainer(out, epochs, elbos, **kw):
    """A trainer whose test ELBO of epoch e is ``elbos[e - 1]`` (the other terms as evaluated)."""
    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
    t = Trainer(m.objective(), epochs=epochs, batch_size=64, device="cpu", seed=1, out=out, progress=False,
                metadata={"model": "vae"}, **kw)
    evaluate = t._evaluate

    def scripted(x, dynamic, batch_size=None):
        terms = evaluate(x, dynamic, batch_size)
        return dict(terms, elbo=elbos[t.epoch], loss=-elbos[t.epoch])  # t.epoch: the epochs done before this one

    t._evaluate = scripted
    return m, t


ELBOS = [-10.0, -5.0, -7.0, -8.0, -6.0, -9.0, -4.0, -11.0]


def test_best_checkpoint_holds_the_best_epoch(tmp_path):
    kept = {}

    def snapshot(trainer, record):
        kept[record["epoch"]] = {k: v.clone() for k, v in trainer.objective.state_dict().items()}

    m, t = make_trainer(tmp_path, 4, ELBOS, keep="best", on_epoch_end=snapshot)
    t.fit(digits(), TEST)
    best = ckpt.load(tmp_path / "best.pt")
    assert best["epoch"] == 2 and best["best"] == {"epoch": 2, "value": -5.0, "metric": "test_elbo", "since": 0}
    for k, v in best["objective"].items():
        assert torch.equal(v, kept[2][k]), k
    assert not all(torch.equal(v, kept[4][k]) for k, v in best["objective"].items())  # the last epoch differs
    assert ckpt.load(tmp_path / "checkpoint.pt")["epoch"] == 4
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert (last["best_epoch"], last["best_test_elbo"]) == (2, -5.0)
    assert t.stop_reason is None


def test_patience_stops_at_the_right_epoch(tmp_path):
    _, t = make_trainer(tmp_path, 8, ELBOS, patience=3)
    history = t.fit(digits(), TEST)
    # best at epoch 2; epochs 3, 4, 5 do not improve on it: stop after epoch 5
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert "after epoch 5" in t.stop_reason and "not improved for 3 epochs" in t.stop_reason
    assert history[-1]["stopped"] == t.stop_reason
    assert not (tmp_path / "best.pt").exists()  # keep="last": checkpoint.pt alone


@pytest.mark.parametrize("cut", [3, 4])
def test_resume_mid_patience_stops_at_the_same_epoch(tmp_path, cut):
    m_full, t_full = make_trainer(tmp_path / "full", 8, ELBOS, keep="best", patience=3)
    t_full.fit(digits(), TEST)
    _, t_a = make_trainer(tmp_path / "cut", cut, ELBOS, keep="best", patience=3)
    t_a.fit(digits(), TEST)  # "interrupted" after epoch `cut`, one or two epochs into its patience
    assert ckpt.load(tmp_path / "cut" / "checkpoint.pt")["best"]["since"] == cut - 2
    m_b, t_b = make_trainer(tmp_path / "cut", 8, ELBOS, keep="best", patience=3)
    history = t_b.fit(digits(), TEST, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5] and t_b.stop_reason == t_full.stop_reason
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_b.state_dict().items()):
        assert torch.equal(a, b), k
    for name in ("best.pt", "checkpoint.pt"):
        full, cut_ = ckpt.load(tmp_path / "full" / name), ckpt.load(tmp_path / "cut" / name)
        assert full["epoch"] == cut_["epoch"] and full["best"] == cut_["best"]
        for k in full["objective"]:
            assert torch.equal(full["objective"][k], cut_["objective"][k]), (name, k)
    # resumed again: it has stopped, and stays stopped
    _, t_c = make_trainer(tmp_path / "cut", 8, ELBOS, keep="best", patience=3)
    assert len(t_c.fit(digits(), TEST, resume=True)) == 5 and t_c.stop_reason == t_full.stop_reason


def test_keep_and_patience_are_checked(tmp_path):
    m = zoo.create("vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=2)
    with pytest.raises(ConfigError, match="keep 'all' is not a choice of checkpoints; expected one of last, best"):
        Trainer(m.objective(), keep="all")
    with pytest.raises(ConfigError, match="patience=0; expected an integer >= 1"):
        Trainer(m.objective(), patience=0)
    with pytest.raises(ConfigError, match="expected test data"):
        Trainer(m.objective(), epochs=1, patience=2, device="cpu", progress=False).fit(digits())
    with pytest.raises(ConfigError, match="keep='best' needs out="):
        Trainer(m.objective(), epochs=1, keep="best", device="cpu", progress=False).fit(digits(), TEST)


def test_a_damaged_best_field_is_refused(tmp_path):
    _, t = make_trainer(tmp_path, 2, ELBOS)
    t.fit(digits(), TEST)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["best"]["epoch"] = 7
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"best\['epoch'\] is 7, after the 2 epochs done"):
        ckpt.load(tmp_path / "checkpoint.pt")
    state["best"]["since"] = -1
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"best\['since'\] is -1, not a count of epochs"):
        ckpt.load(tmp_path / "checkpoint.pt")
