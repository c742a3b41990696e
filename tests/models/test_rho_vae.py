"""The rho-VAE: its ELBO uses the closed-form KL of papers/README.md."""

import torch

from vaezoo import zoo


def test_rho_vae_elbo_uses_the_papers_kl():
    torch.manual_seed(0)
    m = zoo.create("rho-vae", data_shape=(1, 8, 8), latent_dim=5, hidden=(16,)).double()
    x = torch.bernoulli(torch.rand(7, 1, 8, 8, dtype=torch.float64))
    objective = m.objective()
    _, terms = objective(x)
    assert objective._analytic == {"z"}
    q = m.guide.posterior(x)
    mu, s, rho, d = q.loc, q.scale**2, q.rho, 5
    kl = 0.5 * ((mu**2).sum(-1) + d * (s - 1 - s.log()) - (d - 1) * torch.log1p(-(rho**2)))
    torch.testing.assert_close(terms["kl"], kl.mean())
    assert ((rho > -1) & (rho < 1)).all()
