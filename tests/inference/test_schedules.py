"""Learning-rate schedules and KL warm-up: the formulas, the Trainer's learning rates and KL weights
epoch by epoch, an exact resume mid-schedule, the KL weight as an input of a compiled program and one
one-program step for every learning rate of a schedule."""

import math
import types
import warnings

import pyro
import pytest
import torch

from vaezoo.errors import CheckpointError, ConfigError
from vaezoo.inference import ELBO, IWAE, Constrained, Trainer, checkpoint, schedules

from test_compile import B, _pair


def test_burda_schedule_against_its_formula():
    f = schedules.factor("burda", epochs=3280)
    stages = [schedules.burda_stage(e) for e in range(3280)]
    # stage i lasts 3^i epochs, in order, 3280 epochs in all
    assert [stages.count(i) for i in range(8)] == [3**i for i in range(8)]
    assert stages == sorted(stages) and schedules.BURDA_EPOCHS == 3280
    for e in (0, 1, 3, 4, 12, 13, 39, 40, 1092, 1093, 3279, 5000):
        assert f(e) == pytest.approx(10 ** (-schedules.burda_stage(e) / 7))
    assert f(0) == 1 and f(1) == pytest.approx(10 ** (-1 / 7)) and f(3279) == pytest.approx(0.1) and f(5000) == pytest.approx(0.1)


def test_cosine_and_warmup_against_their_formulas():
    f = schedules.factor("cosine", epochs=10)
    assert [f(e) for e in range(10)] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)])
    assert f(0) == 1 and f(10) == pytest.approx(0, abs=1e-12)
    g = schedules.factor("constant", epochs=10, warmup_epochs=4)
    assert [g(e) for e in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    h = schedules.factor("cosine", epochs=10, warmup_epochs=2)
    assert [h(e) for e in range(3)] == pytest.approx([0.5 * f(0), f(1), f(2)])
    assert [schedules.kl_weight(t, 4, 2) for t in (0, 1, 4, 7, 8, 100)] == pytest.approx([0, 1 / 8, 0.5, 7 / 8, 1, 1])
    assert schedules.kl_weight(0, 4, 0) == 1
    assert schedules.make_scheduler(torch.optim.Adam([torch.zeros(1, requires_grad=True)]), "constant", 10) is None


def _data():
    model, guide, x = _pair()
    return model, guide, types.SimpleNamespace(data=torch.cat([x, 1 - x, x]), binarize="dynamic")  # 3 steps an epoch


def _train(out=None, epochs=4, resume=False, compile=False, **kw):
    pyro.clear_param_store()
    model, guide, data = _data()
    options = dict(schedule="cosine", warmup_epochs=2, kl_warmup=2) | kw
    trainer = Trainer(ELBO(model, guide, compile=compile), epochs=epochs, batch_size=B, dtype="float64", device="cpu",
                      progress=False, lr=0.05, out=out, seed=1, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback of a compiled run, no scheduler warning
        history = trainer.fit(data, resume=resume)
    return trainer, history


def test_the_trainer_follows_the_schedule_and_the_kl_warmup():
    trainer, history = _train()
    f = schedules.factor("cosine", 4, 2)
    assert [r["lr"] for r in history] == pytest.approx([0.05 * f(e) for e in range(4)])
    # the weight of each epoch's last step (3 steps an epoch, 2 epochs of warm-up)
    assert [r["kl_weight"] for r in history] == pytest.approx([2 / 6, 5 / 6, 1, 1])
    assert float(trainer.objective.kl_weight) == 1.0  # the objective is left unweighted
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * f(4))
    _, burda = _train(epochs=5, schedule="burda", warmup_epochs=0, kl_warmup=0)
    assert [r["lr"] for r in burda] == pytest.approx([0.05 * 10 ** (-i / 7) for i in (0, 1, 1, 1, 2)])
    assert all("kl_weight" not in r for r in burda)
    _, constant = _train(epochs=1, schedule="constant", warmup_epochs=0, kl_warmup=0)
    assert "lr" not in constant[0]


class Interrupted(Exception):
    pass


def _interrupt_after_epoch_2(trainer, record):
    if record["epoch"] == 2:
        raise Interrupted


def test_a_run_resumed_mid_schedule_ends_as_the_uninterrupted_run(tmp_path):
    trainer, history = _train()
    with pytest.raises(Interrupted):  # the same run (4 epochs of cosine), stopped after its second
        _train(out=tmp_path, on_epoch_end=_interrupt_after_epoch_2)
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["scheduler"]["last_epoch"] == 2
    resumed, resumed_history = _train(out=tmp_path, epochs=4, resume=True)
    assert [r["train_loss"] for r in resumed_history] == [r["train_loss"] for r in history]
    assert [r["lr"] for r in resumed_history] == [r["lr"] for r in history]
    for p, q in zip(resumed.params, trainer.params):
        assert torch.equal(p, q)
    # a checkpoint without the schedule's state cannot continue a scheduled run
    del state["scheduler"]
    checkpoint.save(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="no learning-rate schedule"):
        _train(out=tmp_path, epochs=4, resume=True)


def test_the_kl_weight_is_an_input_of_a_compiled_program():
    pyro.clear_param_store()
    model, guide, x = _pair()
    fast, eager = ELBO(model, guide, compile=True), ELBO(model, guide)
    params = list(fast.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fast(x)  # compiles with the weight 1
        for weight in (0.3, 0.0, 1.0):
            fast.kl_weight.fill_(weight)
            eager.kl_weight.fill_(weight)
            loss, terms = fast(x)
            ref_loss, ref_terms = eager(x)
            torch.testing.assert_close(loss, ref_loss)
            torch.testing.assert_close(terms, ref_terms)  # the elbo term: unweighted
            torch.testing.assert_close(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params))
            # the weight enters the loss, on both paths (at 0.3 and 0 the loss is not the plain ELBO)
            torch.testing.assert_close(ref_loss, -(ref_terms["log_lik"] - weight * ref_terms["kl"]))
            torch.testing.assert_close(loss, -(terms["log_lik"] - weight * terms["kl"]))
            if weight != 1.0:
                assert not torch.allclose(loss, -(terms["log_lik"] - terms["kl"]))
    assert len(fast._programs) == 1


def test_a_compiled_scheduled_run_is_one_program_and_the_eager_run():
    fast, fast_history = _train(compile=True)
    eager, eager_history = _train()
    assert fast.objective.compiles and [type(s).__name__ for s in fast._steps.values()] == ["TrainingStep"]
    for a, b in zip(fast_history, eager_history):
        assert a["lr"] == b["lr"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
    for p, q in zip(fast.params, eager.params):
        torch.testing.assert_close(p, q)


def test_schedule_arguments_are_checked():
    model, guide, _ = _pair()
    with pytest.raises(ConfigError, match="unknown schedule 'linear'; expected one of constant, burda, cosine"):
        Trainer(ELBO(model, guide), schedule="linear")
    with pytest.raises(ConfigError, match="warmup_epochs=-1; expected an integer >= 0"):
        Trainer(ELBO(model, guide), warmup_epochs=-1)
    with pytest.raises(ConfigError, match="kl_warmup=3 needs an objective with a KL term to weight; IWAE has none"):
        Trainer(IWAE(model, guide), kl_warmup=3)
    with pytest.raises(ConfigError, match="Constrained has none"):
        Trainer(Constrained(model, guide, kl_target=1.0), kl_warmup=3)
