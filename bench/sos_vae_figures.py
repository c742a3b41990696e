"""The SOS-VAE paper's Figures 2-7, rendered from a trained run with vaezoo's observation-space
tools (``vaezoo.evaluation.observation``): one PNG per figure in OUT_DIR. The paper's figures are
CelebA and UK Biobank images; these are the same constructions on the run's own dataset (MNIST
on this machine), so they show what the method does there, not the paper's pictures.

    OMP_NUM_THREADS=1 python bench/sos_vae_figures.py RUN_DIR OUT_DIR [--baseline RUN_DIR] [--n 8] [--seed 0]

RUN_DIR: a run of ``sos-vae`` or ``sos-vae-paper`` (``vaezoo train --model sos-vae ... --out RUN_DIR``);
``--baseline``: a run of ``beta-vae-gaussian`` for Figure 2's pixel-wise independent half.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vaezoo import runs
from vaezoo.errors import VaezooError
from vaezoo.evaluation import observation as obs
from vaezoo.evaluation.figures import save_image_grid
from vaezoo.provenance import code_header

FILES = {
    "figure2b_sos_vae.png": "Figure 2(b)/(d): SOS-VAE, a column per prior draw; rows: mean, a sample of p(x | z), "
                            "their difference (grey = 0), per-pixel variance, positive and negative covariance to "
                            "the central pixel",
    "figure2a_beta_vae.png": "Figure 2(a)/(c): the same rows for the --baseline run (pixel-wise independent: the "
                             "covariance is the variance at the central pixel alone); only with --baseline",
    "figure3_samples.png": "Figure 3, the SOS-VAE half: a row per prior draw, its mean then 7 samples of p(x | z) "
                           "from the one decoder pass (the Dorta et al. half is not implemented in vaezoo)",
    "figure4_interpolation.png": "Figure 4: a row per prior draw, slerp of the low-rank noise from eps0 to eps1 in 8 "
                                 "steps with the pixel noise fixed (eq. 4), no further decoder pass",
    "figure5_components.png": "Figure 5: one prior draw and one noise; a row per principal component of the "
                              "covariance factor (up to 10), its scale from -3 to 3 in 7 columns (eq. 5)",
    "figure6_editing.png": "Figure 6: a row per prior draw; mean, first edit (a bright bar painted on the mean), "
                           "its conditional-mean completion, second edit (a dark patch added), its completion "
                           "(eqs. 6-7, conditioning on all the pixels edited so far)",
    "figure7_without_networks.png": "Figure 7: the low-rank normal of the run's rank fitted to training images "
                                    "without networks (top row: samples) against PCA of the same rank (bottom row)",
}


def _parser() -> argparse.ArgumentParser:
    epilog = "files written to OUT_DIR (the paper's figure each one renders):\n" + "\n".join(
        f"  {name}\n      {text}" for name, text in FILES.items())
    p = argparse.ArgumentParser(prog="sos_vae_figures.py", description=__doc__.split("\n\n")[0],
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory of sos-vae or sos-vae-paper")
    p.add_argument("out", help="directory for the PNGs (created)")
    p.add_argument("--baseline", help="run directory of beta-vae-gaussian, for Figure 2(a)")
    p.add_argument("--n", type=int, default=8, help="prior draws per figure (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-images", type=int, default=2000, help="training images for Figure 7 (default 2000)")
    p.add_argument("--fit-steps", type=int, default=500, help="Adam steps of Figure 7's fit (default 500)")
    return p


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Non-negative values per image scaled to [0, 1]."""
    return v / v.flatten(1).amax(1).clamp_min(1e-12).reshape((-1,) + (1,) * (v.dim() - 1))


def figure2(m, path: Path, n: int, seed: int) -> Path:
    c, h, w = m.data_shape
    pixel = (h // 2) * w + w // 2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = obs.prior_observation(m, n)
        sample = d.sample()
    mean, cov = d.mean, obs.covariance_to(d, pixel)
    diff = sample - mean
    diff = 0.5 + 0.5 * diff / diff.flatten(1).abs().amax(1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
    rows = [mean, sample, diff, _unit(d.variance), _unit(cov.clamp(min=0)), _unit((-cov).clamp(min=0))]
    return save_image_grid(torch.cat(rows), path, nrow=n)


def figure3(m, path: Path, n: int, seed: int, per_draw: int = 7) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = obs.prior_observation(m, n)
        samples = d.sample((per_draw,))  # [S, n, ...]
    rows = torch.cat([d.mean.unsqueeze(1), samples.transpose(0, 1)], 1)  # [n, 1 + S, ...]
    return save_image_grid(rows.flatten(0, 1), path, nrow=per_draw + 1)


def figure4(m, path: Path, n: int, seed: int, steps: int = 8) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = obs.prior_observation(m, n)
        flat, _ = obs.low_rank(d)
        r = flat.cov_factor.shape[-1]
        eps0, eps1 = torch.randn(2, n, r, dtype=flat.loc.dtype)
        noise = torch.randn(flat.loc.shape, dtype=flat.loc.dtype)
    x = obs.interpolate(d, eps0, eps1, torch.linspace(0, 1, steps), noise=noise)  # [T, n, ...]
    return save_image_grid(x.transpose(0, 1).flatten(0, 1), path, nrow=steps)


def figure5(m, path: Path, seed: int, scales=(-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = obs.prior_observation(m, 1)
        flat, _ = obs.low_rank(d)
        r = flat.cov_factor.shape[-1]
        eps = torch.randn(1, r, dtype=flat.loc.dtype)
        noise = torch.randn(flat.loc.shape, dtype=flat.loc.dtype)
    rows = [obs.scale_component(d, eps, k, s, noise=noise) for k in range(min(10, r)) for s in scales]
    return save_image_grid(torch.cat(rows), path, nrow=len(scales))


def figure6(m, path: Path, n: int, seed: int) -> Path:
    c, h, w = m.data_shape
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        d = obs.prior_observation(m, n)
    mean = d.mean
    bar = torch.zeros(m.data_shape, dtype=torch.bool)
    bar[:, h // 2 - 1:h // 2 + 1, w // 4:3 * w // 4] = True  # a horizontal bar through the centre
    patch = torch.zeros(m.data_shape, dtype=torch.bool)
    patch[:, h // 5:h // 5 + max(2, h // 7), w // 2 - max(1, w // 14):w // 2 + max(1, w // 14)] = True
    painted1 = torch.where(bar, torch.ones_like(mean), mean)
    first = obs.edit(d, bar, painted1)
    painted2 = torch.where(patch, torch.zeros_like(mean), first)
    second = obs.edit(d, bar | patch, painted2)
    rows = torch.stack([mean, painted1, first, painted2, second], 1)  # [n, 5, ...]
    return save_image_grid(rows.flatten(0, 1), path, nrow=5)


def figure7(m, cfg, path: Path, n: int, seed: int, images: int, steps: int) -> Path:
    x = runs.load_split(cfg, "train").data[:images].to(next(m.parameters()).dtype)
    rank = obs.low_rank(obs.prior_observation(m, 1))[0].cov_factor.shape[-1]
    return obs.observational_figure(x, rank, path, n=n, steps=steps, seed=seed)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    print(code_header(), flush=True)
    if args.n < 1:
        print(f"sos_vae_figures.py: --n {args.n}; expected an integer >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = Path(args.out)
    try:
        m, cfg, _ = runs.load_trained(Path(args.run), torch.device("cpu"))
        obs.low_rank(obs.prior_observation(m, 1))  # a one-line error for a run that is not low rank
        out.mkdir(parents=True, exist_ok=True)
        written = [figure2(m, out / "figure2b_sos_vae.png", args.n, args.seed)]
        if args.baseline:
            base, _, _ = runs.load_trained(Path(args.baseline), torch.device("cpu"))
            written.append(figure2(base, out / "figure2a_beta_vae.png", args.n, args.seed))
        written += [figure3(m, out / "figure3_samples.png", args.n, args.seed),
                    figure4(m, out / "figure4_interpolation.png", args.n, args.seed),
                    figure5(m, out / "figure5_components.png", args.seed),
                    figure6(m, out / "figure6_editing.png", args.n, args.seed),
                    figure7(m, cfg, out / "figure7_without_networks.png", args.n, args.seed, args.fit_images,
                            args.fit_steps)]
    except VaezooError as e:
        print(f"sos_vae_figures.py: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
