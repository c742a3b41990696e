"""The Trainer refuses mistakes at the door: every argument and every dataset is checked once, with
a one-line error naming the bad value and what was expected."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from vaezoo.errors import ConfigError, RunError, ShapeError, SupportError
from vaezoo.inference import ELBO, Trainer
from vaezoo.inference import trainer as trainer_module

D = 8


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def bernoulli_pair():
    """A plain-function pair with a Bernoulli likelihood, its networks registered with pyro.module."""
    torch.manual_seed(0)
    dec, enc = nn.Linear(2, D), nn.Linear(D, 4)

    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, log_scale = enc(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


def binary(n=100, seed=1):
    return torch.bernoulli(torch.full((n, D), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(seed))


def trainer(**kw):
    kw = dict(dict(epochs=1, batch_size=25, device="cpu", dtype="float64", progress=False), **kw)
    return Trainer(ELBO(*bernoulli_pair()), **kw)


def one_line(err, *named):
    msg = str(err.value)
    assert "\n" not in msg
    for s in named:
        assert s in msg, (s, msg)


@pytest.mark.parametrize(
    "kw, named",
    [
        (dict(epochs=2.7), "2.7"),
        (dict(epochs=True), "True"),
        (dict(epochs=-1), "-1"),
        (dict(epochs="3"), "'3'"),
        (dict(batch_size=0), "0"),
        (dict(batch_size=1.5), "1.5"),
        (dict(lr=0), "lr"),
        (dict(lr=-1e-3), "-0.001"),
        (dict(lr=float("nan")), "nan"),
        (dict(lr=float("inf")), "inf"),
        (dict(lr="fast"), "'fast'"),
        (dict(clip_norm=-1), "-1"),
        (dict(clip_norm=0), "clip_norm"),
        (dict(clip_norm=float("inf")), "inf"),
        (dict(seed=-1), "-1"),
        (dict(seed=2**32), str(2**32)),
        (dict(seed=0.5), "0.5"),
        (dict(dtype="float16"), "'float16'"),
        (dict(dtype=torch.float16), "torch.float16"),
        (dict(dtype="double"), "'double'"),
        (dict(optimizer="adamm"), "'adamm'"),
        (dict(optimizer=3), "3"),
        (dict(device="meta"), "'meta'"),
        (dict(device="mps"), "'mps'"),
        (dict(device="gpu"), "'gpu'"),
        (dict(device="cpu:1"), "'cpu:1'"),
        (dict(device=0), "0"),
        (dict(on_epoch_end="print"), "'print'"),
    ],
)
def test_bad_argument_refused_in_one_line(kw, named):
    with pytest.raises(ConfigError) as err:
        trainer(**kw)
    one_line(err, named, next(iter(kw)) if next(iter(kw)) != "device" else "expected auto, cpu or cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_refused_without_cuda():
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ConfigError) as err:
            trainer(device=device)
        one_line(err, repr(device), "CUDA is not available")


def test_good_arguments_normalized():
    t = trainer(epochs=np.int64(2), batch_size=np.int32(7), lr=np.float32(0.5), seed=2**32 - 1, clip_norm=1, dtype=torch.float64)
    assert (t.epochs, t.batch_size, t.lr, t.seed, t.clip_norm, t.dtype) == (2, 7, 0.5, 2**32 - 1, 1.0, torch.float64)
    assert type(t.epochs) is int and type(t.clip_norm) is float
    assert trainer(epochs=0).epochs == 0
    assert trainer(device=torch.device("cpu")).device == torch.device("cpu")


def test_grey_data_under_bernoulli_names_site_value_and_support():
    x = binary(200)
    x[150, 3] = 0.25  # beyond the datapoints the model runs on: the fixed support is checked on all
    with pytest.raises(SupportError) as err:
        trainer().fit(x)
    one_line(err, "site 'x' has the value 0.25 at datapoint 150 of the training data (index (150, 3))", "Boolean()")
    with pytest.raises(SupportError) as err:
        trainer().fit(binary(), test=x)
    one_line(err, "value 0.25 at datapoint 150 of the test data (index (150, 3))")


def test_support_of_a_transformed_observation_checked_on_the_model_run():
    """A model that observes a reshaped x: the value of the site is named."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Bernoulli(probs=x.new_full((2, D // 2), 0.5)).to_event(2), obs=x.reshape(-1, 2, D // 2))

    def guide(x):
        pass

    x = binary(10)
    x[4, 5] = 0.5
    with pytest.raises(SupportError) as err:
        Trainer(ELBO(model, guide), device="cpu", dtype="float64", progress=False).evaluate(x)
    one_line(err, "site 'x' has the value 0.5 at datapoint 4 (index (4, 1, 1))")


def test_non_finite_data_named():
    x = binary()
    x[7, 2] = float("nan")
    with pytest.raises(SupportError) as err:
        trainer().fit(x)
    one_line(err, "training data[7, 2] is nan", "finite")
    x[7, 2] = -float("inf")
    with pytest.raises(SupportError) as err:
        trainer().evaluate(x)
    one_line(err, "data[7, 2] is -inf")


def test_shape_and_emptiness():
    with pytest.raises(ShapeError) as err:
        trainer().fit(binary(), test=binary()[:, :4])
    one_line(err, "(the test data) of shape (100, 4)", "(8,)")
    with pytest.raises(ShapeError) as err:
        trainer().fit(torch.empty(0, D, dtype=torch.float64))
    one_line(err, "(0, 8)", "N >= 1")
    with pytest.raises(ShapeError) as err:
        trainer().evaluate(torch.empty(0, D))
    one_line(err, "(0, 8)")
    with pytest.raises(ShapeError) as err:
        trainer().fit(binary(), test=torch.tensor(1.0))
    one_line(err, "test data of shape ()")


def test_data_types():
    with pytest.raises(ConfigError) as err:
        trainer().fit(torch.zeros(4, D, dtype=torch.complex64))
    one_line(err, "torch.complex64")
    with pytest.raises(ConfigError) as err:
        trainer().fit("pixels.npy")
    one_line(err, "str")
    # raw 8-bit pixels under a Bernoulli: converted, then refused by the support check
    with pytest.raises(SupportError) as err:
        trainer().fit((binary() * 255).to(torch.uint8))
    one_line(err, "value 255.0 at datapoint 0")


def test_integer_and_numpy_data_train_like_float_data():
    x = binary()
    runs = []
    for data in (x, x.to(torch.int64), x.bool(), x.numpy()):
        pyro.clear_param_store()
        runs.append(trainer(epochs=2).fit(data))
    for other in runs[1:]:
        assert [r["train_loss"] for r in other] == [r["train_loss"] for r in runs[0]]


def test_dynamic_binarization_needs_probabilities():
    class Grey:
        data = torch.rand(50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        binarize = "dynamic"

    Grey.data[9, 1] = 1.5
    with pytest.raises(SupportError) as err:
        trainer().fit(Grey())
    one_line(err, "training data[9, 1] is 1.5", "[0, 1]")
    Grey.data[9, 1] = 0.5  # grey probabilities are what dynamic binarization expects
    assert math.isfinite(trainer().fit(Grey())[-1]["train_loss"])


def test_resume_needs_out():
    with pytest.raises(ConfigError) as err:
        trainer().fit(binary(), resume=True)
    one_line(err, "resume=True", "out=")


def test_evaluate_batch_size_checked():
    with pytest.raises(ConfigError) as err:
        trainer().evaluate(binary(), batch_size=0)
    one_line(err, "batch_size", "0")


def test_data_checked_once_per_dataset(monkeypatch):
    """fit checks the training and the test set once each, however many epochs and steps."""
    calls = {"as_data": 0, "check_support": 0}
    for name in calls:
        original = getattr(trainer_module, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(trainer_module, name, counting)
    t = trainer(epochs=3, batch_size=10)
    t.fit(binary(), test=binary(30, seed=2))
    assert len(t.history) == 3 and "test_elbo" in t.history[-1]
    assert calls == {"as_data": 2, "check_support": 2}


def test_fit_again_starts_from_epoch_one():
    t = trainer(epochs=2)
    t.fit(binary())
    assert [r["epoch"] for r in t.fit(binary())] == [1, 2]


def test_out_must_be_a_directory(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(ConfigError) as err:
        trainer(out=tmp_path / "run")
    one_line(err, str(tmp_path / "run"), "run directory")
    with pytest.raises(ConfigError) as err:
        trainer(out=3)
    one_line(err, "out 3")


def test_fit_never_overwrites_another_runs_checkpoint(tmp_path):
    """A new Trainer on a directory that holds a checkpoint refuses to start afresh over it (the
    checkpoint is unchanged); resume=True continues it."""
    trainer(out=tmp_path).fit(binary())
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunError) as err:
        trainer(out=tmp_path, epochs=2).fit(binary())
    one_line(err, str(tmp_path / "checkpoint.pt"), "resume=True")
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [r["epoch"] for r in trainer(out=tmp_path, epochs=2).fit(binary(), resume=True)] == [1, 2]
