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

from vaezoo import data, runs


def probe(run: str, n: int = 200, seed: int = 0) -> str:
    m, cfg, state = runs.load_trained(run, torch.device("cpu"))
    m.eval()
    x = data.load(cfg["dataset"], split="test").data[:n].to(torch.float32)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = m.guide.encoder(x)
        latent = out.shape[-1] // 2
        loc, factor, _ = m.model.decoder(out[..., :latent])  # the posterior means' decoding
        prior_loc, prior_factor, _ = m.model.decoder(torch.randn(n, latent))
    def size(w):  # the pixel-wise independent baseline has no factor
        return "none" if w is None else f"{w.abs().mean():.3g}"

    return (f"{run} (epoch {state['epoch']}): test reconstructions: mean |mu| {loc.abs().mean():.3g}, "
            f"RMS(x - mu) {(x - loc).pow(2).mean().sqrt():.3g}, mean |W| {size(factor)}; "
            f"prior draws: mean |mu| {prior_loc.abs().mean():.3g}, mean |W| {size(prior_factor)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of sos-vae or sos-vae-paper")
    for run in ap.parse_args().runs:
        print(probe(run), flush=True)


if __name__ == "__main__":
    main()
