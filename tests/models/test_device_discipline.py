"""Device mistakes caught without a GPU: every entry's training step, log p(x) pass and samples run
with torch's default device pointed at ``meta`` while the data and the weights live on the CPU, so a
tensor made without taking its device from the input (``torch.zeros(n)`` instead of
``x.new_zeros(n)``) lands on ``meta`` and the step fails. That is the mistake that breaks
``--device cuda`` (the CUDA default is the CPU); float64 end to end catches the dtype twin."""

import pyro
import pytest
import torch

from vaezoo import evaluation, zoo
from vaezoo.particles import base_distribution

SHAPE = (1, 8, 8)


def _has_density(m, x) -> bool:
    from pyro.distributions import Delta

    from vaezoo import traces

    sites = traces.record(m.guide, x).sites
    return not any(isinstance(base_distribution(s["fn"]), Delta) for s in sites.values() if not s["is_observed"])


def test_the_meta_default_device_catches_a_tensor_made_on_the_default_device():
    x = torch.ones(3, dtype=torch.float64)
    with torch.device("meta"), pytest.raises(RuntimeError):
        x + torch.zeros(3, dtype=torch.float64)  # the mistake: no device taken from x


@pytest.mark.parametrize("name", zoo.names())
def test_every_entry_makes_its_tensors_on_its_inputs_device(name):
    pyro.set_rng_seed(0)
    m = zoo.create(name, data_shape=SHAPE).to(torch.float64)
    objective = m.objective()
    x = torch.bernoulli(torch.rand((4,) + SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    objective(x)  # the checked first call (Pyro's validation) outside: it is not under test here
    density = _has_density(m, x)
    with torch.device("meta"):
        loss, _ = objective(x)
        loss.backward()
        assert loss.device.type == "cpu" and loss.dtype == torch.float64
        if density:
            result = evaluation.log_marginal(m.model, m.guide, x, num_samples=4, seed=0)
            assert result.log_px.device.type == "cpu"
        samples = m.sample(2)
        assert samples.device.type == "cpu" and samples.dtype == torch.float64
