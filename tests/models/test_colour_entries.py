"""The spatial entries and ``vae`` on colour images of CIFAR-10's and CelebA's sizes, at their
default map sizes: one float64 training step with each real-valued likelihood moves every net, and
the latent maps and samples have the expected shapes."""

import pyro
import pytest
import torch

from vaezoo import traces, zoo

SPATIAL = ["spatial-vae-naive", "spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full"]
# the entries' defaults for colour images (vaezoo/entries/spatial_vae.py): 32 maps of 4x4 for
# 32x32, 64 maps of 4x4 for 64x64
MAPS = {32: (32, 4, 4), 64: (64, 4, 4)}
# the likelihoods of CommonConfig for intensities in [0, 1] (bernoulli needs binary data)
LIKELIHOODS = ["normal", "continuous-bernoulli"]


def colour_images(side, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", SPATIAL + ["vae"])
def test_one_float64_training_step_on_colour_images(name, side, likelihood):
    pyro.set_rng_seed(0)
    # small fully connected layers keep the step fast; the maps and decoders are the defaults
    small = dict(encoder_hidden=32) if name != "vae" else dict(hidden=(32,), latent_dim=8)
    m = zoo.create(name, data_shape=(3, side, side), likelihood=likelihood, binarize=None, **small).double()
    x = colour_images(side)
    m.check_data(x)
    objective = m.objective()
    loss, _ = objective(x)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    nets = {"encoder": m.guide.encoder, "decoder": m.model.decoder}
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for k, net in nets.items():
        assert all(not torch.equal(b, p) for b, p in zip(before[k], net.parameters())), k
    z = traces.record(m.guide, x).sites["z"]["value"]
    assert z.shape == ((2,) + MAPS[side] if name != "vae" else (2, 8))
    assert m.sample(3).shape == (3, 3, side, side) and m.reconstruct(x).shape == x.shape
