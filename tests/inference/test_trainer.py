"""The trainer: exact resume, clean stop on a non-finite loss, metrics and checkpoints."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch

from vaezoo import data, zoo
from vaezoo.errors import CheckpointError, NonFiniteLossError
from vaezoo.inference import ELBO, IWAE, Trainer
from vaezoo.inference import checkpoint as ckpt


def digits(n=200):
    ds = data.load("digits", split="train", binarize="dynamic")
    ds.data = ds.data[:n]
    return ds


def make_trainer(out, epochs, name="vae", **kw):
    torch.manual_seed(0)
    m = zoo.create(name, data_shape=(1, 8, 8), hidden=(32,), latent_dim=4)
    kw.setdefault("metadata", {"model": name})
    return m, Trainer(m.objective(), epochs=epochs, batch_size=64, device="cpu", seed=3, out=out, progress=False, **kw)


@pytest.mark.parametrize("name", ["vae", "iwae"])
def test_resume_is_exact(tmp_path, name):
    train, test = digits(), data.load("digits", split="test", binarize="fixed")
    m_full, t_full = make_trainer(tmp_path / "full", 3, name)
    t_full.fit(train, test)
    _, t_a = make_trainer(tmp_path / "cut", 1, name)
    t_a.fit(train, test)  # "interrupted" after epoch 1
    m_b, t_b = make_trainer(tmp_path / "cut", 3, name)
    t_b.fit(train, test, resume=True)
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_b.state_dict().items()):
        assert torch.equal(a, b), k
    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in cut] == [1, 2, 3]
    assert [r["train_loss"] for r in full] == [r["train_loss"] for r in cut]
    assert [r["test_elbo"] for r in full] == [r["test_elbo"] for r in cut]


def test_test_evaluation_does_not_shift_the_training_stream(tmp_path):
    """The same seed trains the same parameters with and without a test set (dynamic binarization
    and the guide's draws at evaluation once came from the training's own stream)."""
    train, test = digits(), data.load("digits", split="test", binarize="dynamic")
    m_with, t_with = make_trainer(tmp_path / "with", 2)
    t_with.fit(train, test)
    m_without, t_without = make_trainer(tmp_path / "without", 2)
    t_without.fit(train)
    for (k, a), (_, b) in zip(m_with.state_dict().items(), m_without.state_dict().items()):
        assert torch.equal(a, b), k
    assert [r["train_loss"] for r in t_with.history] == [r["train_loss"] for r in t_without.history]
    # every epoch's test ELBO draws the same noise: the last one is the final parameters' ELBO
    # under the evaluation seed (common random numbers for the flatness rule)
    with torch.random.fork_rng():
        torch.manual_seed(t_with._eval_seed(t_with.seed))
        again = t_with.evaluate(test)
    assert again["elbo"] == t_with.history[-1]["test_elbo"]
    assert t_with._eval_seed(3) not in (3, t_with._rank_seed(3))


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    train = digits()
    m, t = make_trainer(tmp_path, 1)
    t.fit(train)
    good = ckpt.load(tmp_path / "checkpoint.pt")
    assert good["epoch"] == 1
    m2, t2 = make_trainer(tmp_path, 3)

    def poison(trainer, record):  # a learning rate that blows up the next epoch
        for g in trainer.optimizer.param_groups:
            g["lr"] = 1e30

    t2.on_epoch_end = poison
    with pytest.raises(NonFiniteLossError, match=r"epoch 3.*last good checkpoint \(epoch 2\)"):
        t2.fit(train, resume=True)
    kept = ckpt.load(tmp_path / "checkpoint.pt")
    assert kept["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in kept["objective"].values())


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(bad)
    _, t = make_trainer(tmp_path / "run", 1)
    t.fit(digits())
    blob = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(tmp_path / "trunc.pt")
    m, t_other = make_trainer(tmp_path / "run", 2, name="iwae")
    t_other.metadata = {"model": "iwae"}
    with pytest.raises(CheckpointError, match="checkpoint of model 'vae', not 'iwae'"):
        t_other.fit(digits(), resume=True)
    # any setting both record: a run resumed under another optimizer would continue silently
    _, t_opt = make_trainer(tmp_path / "opt", 1, metadata={"model": "vae", "optimizer": "adam"})
    t_opt.fit(digits())
    _, t_opt = make_trainer(tmp_path / "opt", 2, metadata={"model": "vae", "optimizer": "adadelta"})
    with pytest.raises(CheckpointError, match="checkpoint of optimizer 'adam', not 'adadelta'; expected a checkpoint "
                                              "of the same optimizer"):
        t_opt.fit(digits(), resume=True)
    # but not the model's config: a field added to an entry since the run started reads as its
    # default, which the command line checks with the defaults filled in
    _, t_cfg = make_trainer(tmp_path / "opt", 2, metadata={"model": "vae", "optimizer": "adam", "config": {"beta": 1.0}})
    t_cfg.fit(digits(), resume=True)
    assert t_cfg.epoch == 2


def test_user_pair_with_pyro_module_trains():
    """A plain-function model/guide pair registering its nets with pyro.module trains like an entry."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    dec = torch.nn.Linear(2, 64)
    enc = torch.nn.Linear(64, 4)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = dec(z).reshape(z.shape[:-1] + (1, 8, 8))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = enc(x.reshape(x.shape[0], -1))[..., :2]
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    before = dec.weight.detach().clone()
    t = Trainer(ELBO(model, guide), epochs=2, batch_size=50, device="cpu", progress=False, lr=1e-2)
    hist = t.fit(digits())
    assert not torch.equal(before, dec.weight)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert not torch.equal(pyro.param("scale").detach(), torch.ones(2))
    pyro.clear_param_store()


def test_iwae_with_one_particle_is_the_sampled_elbo():
    """IWAE-1 on the same draws is the ELBO with sampled KL terms, value and gradient: the particle
    plate and the per-datapoint reduction change nothing."""
    m = zoo.create("vae", data_shape=(1, 8, 8)).double()
    x = digits(16).data.bernoulli().double()
    iwae, elbo = IWAE(m.model, m.guide, num_particles=1), ELBO(m.model, m.guide, analytic_kl=False)
    iwae(x), elbo(x)  # the first calls probe the pair (and draw for it)
    pyro.set_rng_seed(0)
    loss, terms = iwae(x)
    pyro.set_rng_seed(0)
    elbo_loss, elbo_terms = elbo(x)
    torch.testing.assert_close(loss, elbo_loss)
    torch.testing.assert_close(terms["iwae"], elbo_terms["elbo"])
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(elbo_loss, params)):
        torch.testing.assert_close(a, b)


def test_resuming_with_another_number_of_processes_warns(tmp_path):
    """A checkpoint written by two processes (one random state each) resumed by one: the run
    continues, with a warning that it is no longer the uninterrupted run."""
    train = digits()
    _, t = make_trainer(tmp_path, 1)
    t.fit(train)
    state = ckpt.load(tmp_path / "checkpoint.pt")
    state["rng_ranks"] = [state["rng"], state["rng"]]
    ckpt.save(tmp_path / "checkpoint.pt", state)
    _, t2 = make_trainer(tmp_path, 2)
    with pytest.warns(UserWarning, match=r"written by 2 process\(es\) and is resumed by 1"):
        t2.fit(train, resume=True)
    assert t2.epoch == 2

