"""Probabilistic PCA with an imperfect amortized guide: a tractable model/guide pair whose log p(x),
posterior and KL(q || posterior) are known in closed form, for testing the estimators.

z ~ N(0, I_k), x | z ~ N(W z + b, sigma^2 I_D); x is held as [N, 1, 2, 3] images (D = 6) to
exercise the [B, C, H, W] contract. The guide is a diagonal normal q(z | x) = N(A (x - b), s^2),
with A and s deliberately off the exact posterior.
"""

import pyro
import pyro.distributions as dist
import torch


class PPCA:
    def __init__(self, k=2, shape=(1, 2, 3), sigma=0.7, seed=0, dtype=torch.float64):
        g = torch.Generator().manual_seed(seed)
        self.shape = tuple(shape)
        self.D = D = int(torch.tensor(shape).prod())
        self.k = k
        self.W = torch.randn(D, k, generator=g, dtype=dtype)
        self.b = torch.randn(D, generator=g, dtype=dtype) * 0.5
        self.sigma = sigma
        # exact posterior: Sigma = (I + W^T W / s^2)^-1, mu = Sigma W^T (x - b) / s^2
        eye = torch.eye(k, dtype=dtype)
        self.post_cov = torch.linalg.inv(eye + self.W.T @ self.W / sigma**2)
        self.post_gain = self.post_cov @ self.W.T / sigma**2  # [k, D]
        # imperfect guide: a perturbed gain and a too-wide diagonal scale
        self.A = self.post_gain * 0.8
        self.guide_scale = self.post_cov.diagonal().sqrt() * 1.3

    # --- the pair -------------------------------------------------------------------------
    def model(self, x):
        W, b = self.W.to(x), self.b.to(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.k), 1.0).to_event(1))
            loc = (z @ W.T + b).reshape(z.shape[:-1] + self.shape)
            pyro.sample("x", dist.Normal(loc, self.sigma).to_event(3), obs=x)

    def guide(self, x):
        A, b, s = self.A.to(x), self.b.to(x), self.guide_scale.to(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = (x.reshape(x.shape[0], -1) - b) @ A.T
            pyro.sample("z", dist.Normal(loc, s).to_event(1))

    # --- closed forms ---------------------------------------------------------------------
    def marginal(self):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.D, dtype=self.W.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov)

    def log_px(self, x):
        return self.marginal().log_prob(x.reshape(x.shape[0], -1).to(self.W))

    def posterior(self, x):
        loc = (x.reshape(x.shape[0], -1).to(self.W) - self.b) @ self.post_gain.T
        return dist.MultivariateNormal(loc, covariance_matrix=self.post_cov)

    def guide_dist(self, x):
        loc = (x.reshape(x.shape[0], -1).to(self.W) - self.b) @ self.A.T
        return dist.MultivariateNormal(loc, scale_tril=torch.diag(self.guide_scale))

    def kl_guide_posterior(self, x):
        """KL(q(z | x) || p(z | x)) per datapoint = log p(x) - ELBO(x)."""
        return torch.distributions.kl_divergence(self.guide_dist(x), self.posterior(x))

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        return self.marginal().loc + torch.randn(n, self.D, generator=g, dtype=self.W.dtype) @ torch.linalg.cholesky(
            self.marginal().covariance_matrix
        ).T

    def sample_images(self, n, seed=1):
        return self.sample_x(n, seed).reshape((n,) + self.shape)
