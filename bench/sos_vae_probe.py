"""Has an SOS-VAE run's variance exploded? The paper (section 3.3, Appendix A) names the failure: the
likelihood can be raised by growing the low-rank covariance instead of fitting the mean, and then a
mean far outside the data's [0, 1] is cancelled inside the factor's span. This prints, for the
first 200 test images and for 200 prior draws, the mean absolute value of the decoder's mean and of
its covariance factor, and the RMS distance of the test images to their reconstructions' means.
A healthy run has means inside [0, 1] and an RMS well below the data's own spread (about 0.3 on
MNIST).

    python bench/sos_vae_probe.py RUN_DIR [RUN_DIR ...]
"""

import argparse

import torch

from vaezoo import runs
from vaezoo.errors import ConfigError
from vaezoo.evaluation import observation as obs
from vaezoo.provenance import code_header


def _factor_size(d) -> str:
    try:
        flat, _ = obs.low_rank(d)
    except ConfigError:  # the pixel-wise independent baseline has no factor
        return "none"
    return f"{flat.cov_factor.abs().mean():.3g}"


def probe(run: str, n: int = 200, seed: int = 0) -> str:
    m, cfg, state = runs.load_trained(run, torch.device("cpu"))
    m.eval()
    x = runs.load_split(cfg, "test").data[:n].to(torch.float32)
    torch.manual_seed(seed)
    with torch.no_grad():
        recon = obs.posterior_observation(m, x)  # p(x | z) at the posterior means
        prior = obs.prior_observation(m, n)
    loc, prior_loc = recon.mean, prior.mean
    return (f"{run} (epoch {state['epoch']}): test reconstructions: mean |mu| {loc.abs().mean():.3g}, "
            f"RMS(x - mu) {(x - loc).pow(2).mean().sqrt():.3g}, mean |W| {_factor_size(recon)}; "
            f"prior draws: mean |mu| {prior_loc.abs().mean():.3g}, mean |W| {_factor_size(prior)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of sos-vae or sos-vae-paper")
    args = ap.parse_args()
    print(code_header(), flush=True)
    for run in args.runs:
        print(probe(run), flush=True)


if __name__ == "__main__":
    main()
