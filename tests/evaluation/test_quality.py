"""The sample-quality metric: the shipped classifier classifies, identical sets are at distance ~0,
shifted sets further away the more they are shifted, and torchmetrics' value is the Frechet
distance computed directly with numpy/scipy on the same features."""

import numpy as np
import pytest
import scipy.linalg
import torch

from vaezoo import data, zoo
from vaezoo.errors import ShapeError
from vaezoo.evaluation import quality


@pytest.fixture(scope="module")
def test_images():
    ds = data.load("mnist-small", split="test")
    return ds.data[:500], ds.targets[:500]


def test_the_shipped_classifier_classifies_mnist(test_images):
    x, y = test_images
    with torch.no_grad():
        accuracy = (quality.load_classifier()(x).argmax(-1) == y).float().mean()
    assert accuracy > 0.97
    assert quality.WEIGHTS.stat().st_size < 600_000


def direct_frechet(a, b):
    f = quality.Features(quality.load_classifier())
    fa, fb = f(a).double().numpy(), f(b).double().numpy()
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    s_a, s_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_identical_sets_are_at_zero_and_shifts_move_away(test_images):
    x, _ = test_images
    g = torch.Generator().manual_seed(0)
    same = quality.frechet_distance(x.double(), x)
    near = quality.frechet_distance((x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1), x)
    far = quality.frechet_distance((x + 0.4 * torch.rand(x.shape, generator=g)).clamp(0, 1), x)
    assert abs(same) < 1e-2 * near
    assert 0 < near < far


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # dead ReLU features: singular covariances
def test_agrees_with_a_direct_numpy_scipy_frechet_distance(test_images):
    x, _ = test_images
    g = torch.Generator().manual_seed(0)
    other = data.load("mnist-small", split="train").data[:400]
    noisy = (other + 0.2 * torch.randn(other.shape, generator=g)).clamp(0, 1)
    for a in (other, noisy):
        assert quality.frechet_distance(a, x) == pytest.approx(direct_frechet(a, x), rel=1e-3)


def test_a_zoo_model_is_scored_by_its_means_or_its_samples(test_images):
    x, _ = test_images
    m = zoo.create("sos-vae", data_shape=(1, 28, 28), hidden=(16,), latent_dim=3, features=4, rank=3)
    means = quality.frechet_distance(m, x[:200], n=100)
    samples = quality.frechet_distance(m, x[:200], n=100, from_likelihood=True)
    # a model is scored by the images generate() makes of it, means or draws, with the same seed
    assert means == quality.frechet_distance(quality.generate(m, 100), x[:200])
    assert samples == quality.frechet_distance(quality.generate(m, 100, from_likelihood=True), x[:200])
    assert np.isfinite(means) and np.isfinite(samples) and means != samples
    torch.testing.assert_close(quality.generate(m, 7, seed=3), quality.generate(m, 7, seed=3))
    assert not torch.equal(quality.generate(m, 7, seed=3, from_likelihood=True),
                           quality.generate(m, 7, seed=4, from_likelihood=True))
    with pytest.raises(ShapeError, match=r"makes data of shape \(1, 8, 8\); expected \(1, 28, 28\)"):
        quality.frechet_distance(zoo.create("vae", data_shape=(1, 8, 8)), x)
    with pytest.raises(ShapeError, match=r"generated images of shape \(5, 784\)"):
        quality.frechet_distance(x[:5].reshape(5, -1), x)
