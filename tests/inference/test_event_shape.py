"""Data of the wrong event shape given to the Python API: one ShapeError naming the expected and
the given shape, before the pair runs (not Pyro's or torch's own error from inside the networks)."""

import pytest
import torch

from vaezoo import evaluation, zoo
from vaezoo.errors import ShapeError, VaezooError
from vaezoo.inference import Trainer


@pytest.fixture(scope="module")
def model():
    return zoo.create("vae", data_shape=(1, 8, 8), hidden=(16,), latent_dim=2)


@pytest.mark.parametrize("shape", [(16, 64), (16, 1, 9, 9), (16, 8, 8)])
@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_trainer_refuses_data_of_another_event_shape(model, shape, call):
    x = torch.bernoulli(torch.full(shape, 0.5))
    trainer = Trainer(model.objective(), epochs=1, batch_size=8, device="cpu", progress=False)
    with pytest.raises(ShapeError) as e:
        getattr(trainer, call)(x)
    assert issubclass(ShapeError, VaezooError)
    assert f"of shape {shape} given to a model of data shape (1, 8, 8); expected [N, 1, 8, 8]" in str(e.value)


def test_log_marginal_of_one_unbatched_datapoint(model):
    x = torch.bernoulli(torch.full((1, 8, 8), 0.5))
    with pytest.raises(ShapeError, match=r"x of shape \(1, 8, 8\) .*expected \[N, 1, 8, 8\]; one datapoint too: add its batch"):
        evaluation.log_marginal(model.model, model.guide, x, num_samples=4, progress=False)
    assert evaluation.log_marginal(model.model, model.guide, x[None], num_samples=4, progress=False, seed=0).num_samples == 4


def test_an_entry_with_its_own_data_shape_keeps_it():
    m = zoo.create("sos-vae", data_shape=(1, 8, 8), rank=2, hidden=(16,))
    with pytest.raises(ShapeError, match=r"expected \[N, 1, 8, 8\]"):
        Trainer(m.objective(), device="cpu", progress=False).evaluate(torch.rand(4, 64))
