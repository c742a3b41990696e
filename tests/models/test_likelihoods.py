import pyro
import pyro.distributions as dist
import pytest
import torch

from vaezoo.errors import SupportError
from vaezoo.models.likelihoods import BernoulliLogits, make_likelihood


def test_bernoulli_log_prob_matches_torch_to_float64_precision():
    g = torch.Generator().manual_seed(0)
    # particle dimensions on the logits that the data lack, and logits far into both tails
    logits = 30 * torch.randn(7, 5, 1, 4, 4, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5, dtype=torch.float64), generator=g)
    soft = torch.rand(5, 1, 4, 4, generator=g, dtype=torch.float64)  # cross-entropy for values in [0, 1]
    for value in (x, soft):
        ours = BernoulliLogits(logits=logits, validate_args=False).log_prob(value)
        ref = dist.Bernoulli(logits=logits, validate_args=False).log_prob(value)
        assert ours.shape == ref.shape == (7, 5, 1, 4, 4)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-13)


def test_bernoulli_likelihood_event_shape_expand_and_validation():
    lik = make_likelihood("bernoulli", event_dim=3)
    d = lik(torch.zeros(3, 1, 2, 2))
    assert d.batch_shape == (3,) and d.event_shape == (1, 2, 2)
    assert d.expand((4, 3)).log_prob(torch.ones(3, 1, 2, 2)).shape == (4, 3)
    torch.testing.assert_close(d.log_prob(torch.ones(3, 1, 2, 2)), torch.full((3,), 4 * -0.6931471805599453))
    with pyro.validation_enabled(True), pytest.raises(ValueError):
        BernoulliLogits(logits=torch.zeros(2)).log_prob(torch.tensor([0.0, 2.0]))


def test_bernoulli_log_prob_broadcasts_data_with_more_dimensions_than_the_logits():
    logits = torch.randn(3, 4, dtype=torch.float64)
    x = torch.bernoulli(torch.full((2, 3, 4), 0.5, dtype=torch.float64))
    ours = BernoulliLogits(logits=logits).log_prob(x)
    torch.testing.assert_close(ours, dist.Bernoulli(logits=logits).log_prob(x), rtol=0, atol=1e-13)


def test_bernoulli_log_prob_gradient_matches_torch():
    logits = (5 * torch.randn(4, 3, 6, dtype=torch.float64)).requires_grad_()
    x = torch.bernoulli(torch.full((3, 6), 0.5, dtype=torch.float64))
    (g_ours,) = torch.autograd.grad(BernoulliLogits(logits=logits).log_prob(x).sum(), logits)
    (g_ref,) = torch.autograd.grad(dist.Bernoulli(logits=logits).log_prob(x).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-14)


def test_binary_data_under_a_real_valued_likelihood_is_warned_about():
    from vaezoo.models.likelihoods import binary_data_warning

    grey = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    binary = (grey > 0.5).float()
    assert "binarize=dynamic" in binary_data_warning("real", grey, "dynamic")
    assert "only 0s and 1s" in binary_data_warning("real", binary, None)
    assert binary_data_warning("real", grey, None) is None  # grey levels: a density is right
    assert binary_data_warning("binary", binary, "fixed") is None  # a Bernoulli on binary data


def test_the_bernoulli_suggests_binarizing_only_data_within_the_unit_interval():
    from vaezoo import zoo

    likelihood = zoo.create("vae", data_shape=(1, 8, 8)).model.likelihood
    with pytest.raises(SupportError, match=r"value 0.5 .* binarize them \(--set binarize=dynamic\)"):
        likelihood.check_support(torch.full((2, 1, 8, 8), 0.5))
    with pytest.raises(SupportError, match=r"value 3 .* not within \[0, 1\], so they cannot be binarized"):
        likelihood.check_support(torch.full((2, 1, 8, 8), 3.0))
