"""Speed of the latent-matching terms, side by side in one run, in alternating rounds (medians
reported): the MMD term (WAE-MMD's sum of IMQ kernels; the InfoVAE's ``mmd_weight``) and the
critics' prior draws (``wae-gan``, ``mask-aae``).

- ``mmd_imq`` (``vaezoo.inference.kernels``: the three squared-distance matrices by one matrix
  product each, every scale at once) against the form it replaced, kept here as the reference: a
  ``torch.cdist`` and a kernel per scale and matrix (21 of each). Forward and backward, codes
  ``[B, D]``, float32.
- A training step (loss and gradients) of the zoo's MLP ``vae`` on a batch of MNIST-shaped
  images: the InfoVAE's (``ELBO(mmd_weight=999)``) against the plain ELBO's, and against the
  InfoVAE's with its prior draws from a full run of the model (the decoder run once more, as
  ``traces.prior_codes`` did before it drew from the latent site).
- A training step (loss, backward, Adam) of ``wae-gan`` and of ``mask-aae`` (joint training, the
  mask open after step 1), their critic steps (2 for `wae-gan`, 5 for `mask-aae`: the entries' defaults) drawing from the prior by the step's own latent
  site, against the same with a full model run for each draw (as before). The losses of the two are
  checked equal, bit for bit.

    python bench/latent_matching_step.py [--batch 100] [--latent-dim 20] [--threads 1] [--rounds 5]

Speed only: the values agree (the first line printed is both forms' MMD^2 on the same codes).
"""

import argparse
import statistics
import time

import torch

from vaezoo import traces, zoo
from vaezoo.inference import ELBO
from vaezoo.inference.adversarial import LatentMatching
from vaezoo.inference.kernels import IMQ_SCALES, mmd_imq
from vaezoo.provenance import code_header


def mmd_per_scale(q, p, prior_variance=1.0, scales=IMQ_SCALES):
    """The reference: the former ``mmd_imq``, a ``cdist`` per scale and matrix."""
    n, d = q.shape
    off = 1 - torch.eye(n, dtype=q.dtype)
    total = q.new_zeros(())
    for s in scales:
        c = 2.0 * d * prior_variance * s

        def k(a, b):
            return c / (c + torch.cdist(a, b).square())

        total = total + ((k(q, q) + k(p, p)) * off).sum() / (n * (n - 1))
        total = total - 2 * k(q, p).mean()
    return total


def per_call(fn, n):
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def critic_steps(name, batch, full_run, steps, overrides):
    """ms a training step of ``name`` (after one warm-up step) and its losses; ``full_run``: every
    prior draw of the critic steps by a run of the whole model."""
    import pyro

    pyro.clear_param_store()
    torch.manual_seed(0)
    objective = zoo.create(name, (1, 28, 28), **overrides).objective()
    objective.train()
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3)
    x = torch.bernoulli(torch.full((batch, 1, 28, 28), 0.3))
    fast = LatentMatching._prior_like
    if full_run:
        LatentMatching._prior_like = lambda self, data: traces.prior_codes(self.model, data)
    try:
        losses, start = [], None
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            loss, _ = objective(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return (time.perf_counter() - start) / steps * 1e3, losses
    finally:
        LatentMatching._prior_like = fast


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--latent-dim", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--critic-steps", type=int, default=20, help="training steps of a critic entry a round")
    args = ap.parse_args(argv)
    print(code_header(), flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    q = torch.randn(args.batch, args.latent_dim, requires_grad=True)
    p = torch.randn(args.batch, args.latent_dim)
    print(f"MMD^2 on the same codes: {float(mmd_per_scale(q, p).detach()):.7g} (per scale), {float(mmd_imq(q, p).detach()):.7g} (mmd_imq)")

    model = zoo.create("vae", (1, 28, 28), latent_dim=args.latent_dim)
    x = torch.bernoulli(torch.full((args.batch, 1, 28, 28), 0.3))
    info, plain = ELBO(model.model, model.guide, mmd_weight=999.0), ELBO(model.model, model.guide)
    params = list(info.parameters())
    fast_codes = traces.prior_codes

    def full_run_codes(model_fn, data, sites=None):
        return fast_codes(model_fn, data)

    def step(objective):
        loss, _ = objective(x)
        torch.autograd.grad(loss, params)

    def full_run_step():
        traces.prior_codes = full_run_codes
        try:
            step(info)
        finally:
            traces.prior_codes = fast_codes

    cases = {
        "mmd: per-scale cdist (reference)": lambda: torch.autograd.grad(mmd_per_scale(q, p), q),
        "mmd: mmd_imq": lambda: torch.autograd.grad(mmd_imq(q, p), q),
        "step: plain ELBO (reference)": lambda: step(plain),
        "step: InfoVAE": lambda: step(info),
        "step: InfoVAE, prior draws by a full model run": full_run_step,
    }
    for fn in cases.values():  # warm up
        per_call(fn, 5)
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(per_call(fn, args.calls))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"batch {args.batch}, latent_dim {args.latent_dim}, {args.threads} thread(s), median of {args.rounds} rounds of {args.calls} calls")
    for name, ms in med.items():
        print(f"  {name:50s} {ms:8.3f} ms")
    print(f"mmd_imq / per-scale reference: {med['mmd: mmd_imq'] / med['mmd: per-scale cdist (reference)']:.2f}")
    print(f"InfoVAE step / plain step: {med['step: InfoVAE'] / med['step: plain ELBO (reference)']:.2f}")
    full = med["step: InfoVAE, prior draws by a full model run"]
    print(f"InfoVAE step with a full model run / plain step: {full / med['step: plain ELBO (reference)']:.2f}")

    for name, overrides in (("wae-gan", {}), ("mask-aae", {"mask_warmup": 1})):
        rounds = {False: [], True: []}
        for _ in range(args.rounds):
            ms, losses = critic_steps(name, args.batch, False, args.critic_steps, overrides)
            ms_full, losses_full = critic_steps(name, args.batch, True, args.critic_steps, overrides)
            assert losses == losses_full, f"{name}: the losses differ from the latent site's draws"
            rounds[False].append(ms)
            rounds[True].append(ms_full)
        fast, slow = statistics.median(rounds[False]), statistics.median(rounds[True])
        print(f"{name} step: {fast:.1f} ms (prior draws from the latent site), {slow:.1f} ms (a full model run each): "
              f"{slow / fast:.2f}x; losses identical over {args.critic_steps + 1} steps")


if __name__ == "__main__":
    main()
