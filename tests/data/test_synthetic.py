"""MaskAAE's synthetic data: deterministic, offline, of the true dimension asked for."""

import pytest
import torch

from vaezoo import data
from vaezoo.data.synthetic import SyntheticGenerator
from vaezoo.errors import ConfigError


@pytest.mark.parametrize("true_dim", [2, 4, 8])
def test_generator_output_has_rank_true_dim(true_dim):
    """The 128 x n Jacobian of the generator has rank n at random points: the data lie on an
    n-dimensional manifold of R^128."""
    f = SyntheticGenerator(true_dim, seed=1)
    z = torch.randn(5, true_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for zi in z:
        jac = torch.func.jacrev(f)(zi)  # [128, n]
        assert jac.shape == (128, true_dim)
        assert torch.linalg.matrix_rank(jac).item() == true_dim


def test_same_seed_same_data_and_splits_differ():
    a = data.load("synthetic", split="train", seed=3, true_dim=4, num_samples=50)
    b = data.load("synthetic", split="train", seed=3, true_dim=4, num_samples=50)
    c = data.load("synthetic", split="test", seed=3, true_dim=4, num_samples=50)
    d = data.load("synthetic", split="train", seed=4, true_dim=4, num_samples=50)
    assert a.data.shape == (50, 128) and a.data.dtype == torch.float32
    assert torch.equal(a.data, b.data)
    assert not torch.equal(a.data, c.data) and not torch.equal(a.data, d.data)
    # the data are the generator's image of the stored latents
    f = SyntheticGenerator(4, seed=3)
    assert torch.allclose(f(a.latents.double()).float(), a.data, atol=1e-5)


def test_image_variant_and_defaults():
    img = data.load("synthetic", split="test", image=True, num_samples=7)
    assert img.data.shape == (7, 1, 8, 16)
    assert len(data.load("synthetic", split="test")) == 5000
    assert "synthetic" in data.names()


@pytest.mark.parametrize("kwargs,message", [
    ({"true_dim": 0}, r"true_dim=0; expected an integer from 1 to 128"),
    ({"true_dim": 2.5}, r"true_dim=2\.5; expected an integer"),
    ({"num_samples": 0}, r"num_samples=0; expected an integer"),
    ({"image": "yes"}, r"image='yes'; expected true or false"),
    ({"true_dims": 4}, r"dataset 'synthetic' has no option 'true_dims'"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        data.load("synthetic", **kwargs)


def test_other_datasets_take_no_options():
    with pytest.raises(ConfigError, match=r"dataset 'digits' takes no option 'true_dim'"):
        data.load("digits", true_dim=4)
