"""Bias and cost of AIS's step-size adaptation on a Gamma-Poisson model with an exact log p(x).

z ~ Gamma(a, b), x_d | z ~ Poisson(z) for d = 1..D, so p(x) is a closed form. For data simulated from
the model, AIS from the prior runs with each adaptation (``online``; ``pilot`` with as many pilot
chains as chains, the default number, or one) over several seeds, and reports, per setting:

- the mean of ``w / p(x)`` over every chain and datapoint: 1 for exactly unbiased weights;
- the mean of ``log p̂(x) - log p(x)``: at or below 0 for an unbiased estimator (Jensen);
- the wall time per run.

    OMP_NUM_THREADS=1 python bench/ais_bias.py [--n 2000] [--seeds 10] [--steps 100] [--chains 4] [--leapfrog 5]

Measured (2026-11-24, 2 loaded cores, ``--n 2000 --seeds 10 --steps 100 --chains 4 --leapfrog 5``):

    setting                mean w/p(x) - 1     mean log p̂ - log p (nats)   s per run
    online                 +0.0437 ± 0.0016    +0.0176 ± 0.0016            3.36
    pilot, C pilot chains  -0.0000 ± 0.0016    -0.0257 ± 0.0016            5.90
    pilot, default (2)     +0.0038 ± 0.0016    -0.0224 ± 0.0017            4.16
    pilot, 1 pilot chain   -0.0005 ± 0.0016    -0.0263 ± 0.0017            3.93

Online adaptation puts the "lower bound" above log p(x) (27 standard errors in the weights); every
pilot setting is unbiased within 2.4 standard errors, at 1.2-1.8x the cost of online adaptation.
With 30 steps the online bias is below the noise of a 2000-datapoint run (+0.001 ± 0.005), which is
why the test suite checks E[w] = p(x) for the default and leaves the online bias to this script.
"""

import argparse
import math
import time

import pyro
import pyro.distributions as dist
import torch

from vaezoo.evaluation import AnnealingOptions, ais
from vaezoo.provenance import code_header

A, B, D = 3.0, 1.0, 5


def model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Gamma(x.new_tensor(A), x.new_tensor(B)))
        pyro.sample("x", dist.Poisson(z[..., None].expand(z.shape + (D,))).to_event(1), obs=x)


def exact_log_px(x):
    s = x.sum(-1)
    return (
        A * math.log(B) - math.lgamma(A) + torch.lgamma(A + s) - (A + s) * math.log(B + D)
        - torch.lgamma(x + 1).sum(-1)
    )


def simulate(n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch._standard_gamma(torch.full((n,), A, dtype=torch.float64), generator=g) / B
    return torch.poisson(z[:, None].expand(n, D).contiguous(), generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="datapoints per run")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--leapfrog", type=int, default=2)
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(1)
    settings = {
        "online": dict(adapt="online"),
        "pilot, C pilot chains": dict(adapt="pilot", pilot_chains=args.chains),
        "pilot, default": dict(adapt="pilot"),  # max(2, C / 4) pilot chains
        "pilot, 1 pilot chain": dict(adapt="pilot", pilot_chains=1),
    }
    print(
        f"Gamma({A}, {B})-Poisson, D={D}; AIS from the prior, {args.steps} steps x {args.chains} chains, "
        f"{args.leapfrog} leapfrog steps; {args.n} datapoints x {args.seeds} seeds"
    )
    for name, kw in settings.items():
        ratios, errors, times = [], [], []
        for seed in range(args.seeds):
            x = simulate(args.n, 1000 + seed)
            exact = exact_log_px(x)
            o = AnnealingOptions(steps=args.steps, chains=args.chains, leapfrog_steps=args.leapfrog, **kw)
            t = time.perf_counter()
            r = ais(model, None, x, o, seed=seed)
            times.append(time.perf_counter() - t)
            ratios.append(torch.exp(r.log_weights - exact).flatten())  # [C * N]
            errors.append(r.log_px - exact)
        ratio, err = torch.cat(ratios), torch.cat(errors)
        se_r = ratio.std().item() / math.sqrt(ratio.numel())
        se_e = err.std().item() / math.sqrt(err.numel())
        print(
            f"{name:22s} mean w/p(x) - 1 = {ratio.mean().item() - 1:+.4f} ± {se_r:.4f}; "
            f"mean log p̂ - log p = {err.mean().item():+.4f} ± {se_e:.4f} nats; "
            f"{sum(times) / len(times):.2f} s per run",
            flush=True,
        )


if __name__ == "__main__":
    main()
