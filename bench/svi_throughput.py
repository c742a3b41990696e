"""Training throughput of a zoo VAE, compiled and eager, against a hand-written pure-PyTorch loop.

By default the zoo's ``vae`` (Burda et al. MLP: 784-200-200-2x50 / 50-200-200-784, tanh); ``--net
conv`` takes its convolutional networks instead, ``--model`` another entry with a diagonal Normal
guide and a Bernoulli decoder (``iwae`` trains its own bound then). Identical networks, identical
initial weights, identical loss (Bernoulli log-likelihood minus the closed-form Gaussian KL, batch
mean), Adam(lr=1e-3), batch 128, dynamically binarized MNIST (training set). Runners:

- ``vaezoo-compiled``: ``m.objective(compile=True)`` and Adam stepped as ``vaezoo train --compile``
  (the ``Trainer``) steps them: forward, backward and the update as one compiled program
  (``compiled.TrainingStep``); its compile time (capture and inductor, its caches off) is printed,
  and the break-even number of steps against the eager objective;
- ``vaezoo-loss-compiled``: the compiled objective alone (``loss, _ = objective(x)``,
  ``loss.backward()``, fused ``Adam.step()``), as a user's own loop runs it;
- ``vaezoo-eager``: ``m.objective()`` and torch's default (foreach) Adam, as ``vaezoo train``;
- ``pure-torch``: the same networks and loss written by hand, default Adam: the reference;
- ``pyro-svi``: Pyro's ``SVI`` + ``TraceMeanField_ELBO`` (the same closed-form KL) on a copy of the
  zoo pair (zoo pairs register their networks with Pyro);
- ``numpyro-jit``: with the ``jax`` extra and the MLP, NumPyro's jit-compiled SVI on the same
  networks and weights.

``--threads 1`` also pins the process to one CPU: XLA's CPU client does not keep to one thread
when told to (NumPyro used 1.6 cores of CPU time a step here with ``intra_op_parallelism_threads=1``),
so without the pin the comparison is one core against two.

All are measured alternately, round after round, in one process; figures are ratios of median
throughputs (images/s).

    python bench/svi_throughput.py [--rounds 5] [--steps 200] [--device cpu] [--net mlp|conv] [--threads 1]

The last line printed is ``ratio: X``, vaezoo-compiled / pure-torch.
"""

import argparse
import copy
import os
import statistics
import time

import pyro
import torch
import torch.nn.functional as F

from vaezoo import data, inference, zoo
from vaezoo.inference import compiled
from vaezoo.provenance import code_header


def mnist_train(device):
    try:
        ds = data.load("mnist", split="train", binarize="dynamic")
    except Exception as e:  # the benchmark still measures speed without the real images
        print(f"(full MNIST unavailable: {e}; using mnist-small)")
        ds = data.load("mnist-small", split="train", binarize="dynamic")
    return ds.data.to(device)


def batches(x, batch_size, steps, seed):
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    order = torch.randperm(n, generator=g).to(x.device)
    for s in range(steps):
        i = (s * batch_size) % (n - batch_size + 1)
        yield torch.bernoulli(x[order[i : i + batch_size]])


class PureTorch:
    """The reference: copies of the same encoder and decoder (so the same initial weights), the VAE
    loss written by hand."""

    def __init__(self, encoder, decoder, lr, min_scale):
        self.encoder, self.decoder, self.min_scale = encoder, decoder, min_scale
        params = list(encoder.parameters()) + list(decoder.parameters())
        self.opt = torch.optim.Adam(params, lr=lr)

    def step(self, x):
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z).reshape(x.shape)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-3, -2, -1))
        kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)
        loss = (kl - log_lik).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


class Vaezoo:
    """A zoo pair through the generic objective path (the one every entry and a user's own
    model/guide pair goes through) and the optimizer ``vaezoo.inference.Trainer`` builds for it."""

    def __init__(self, m, lr, compile, x=None):
        self.objective = m.objective(compile=compile)
        # the Trainer's choice: fused Adam for a compiled objective, torch's default otherwise
        self.opt = torch.optim.Adam(self.objective.parameters(), lr=lr, fused=True if compile else None)
        self.program = None
        if x is not None:  # the Trainer's step: one program, built after the checked first call
            with torch.no_grad():
                self.objective(x)
            self.program = compiled.TrainingStep(self.objective, self.opt, None, x)

    @property
    def compile_seconds(self):
        return self.program.compile_seconds if self.program is not None else self.objective.compile_seconds

    def step(self, x):
        if self.program is not None:
            assert self.objective.guards_hold()  # as the Trainer checks before every compiled step
            return self.program(x)[0]
        loss, _ = self.objective(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def pyro_svi_runner(m, lr):
    """Pyro's ``SVI`` on a zoo entry, as a Pyro user runs it (``svi.step`` returns a float)."""
    svi = pyro.infer.SVI(m.model, m.guide, pyro.optim.Adam({"lr": lr}), pyro.infer.TraceMeanField_ELBO())
    return lambda x: svi.step(x) / x.shape[0]  # per datapoint, like the others


def numpyro_runner(encoder, decoder, lr, batch_size):
    """NumPyro's SVI (Trace_ELBO, jit-compiled update) on the same networks and initial weights."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import SVI, Trace_ELBO

    def linears(module, prefix):
        return {f"{prefix}{i}": (jnp.asarray(l.weight.detach().numpy()), jnp.asarray(l.bias.detach().numpy()))
                for i, l in enumerate(m for m in module.modules() if isinstance(m, torch.nn.Linear))}

    enc0, dec0 = linears(encoder, "e"), linears(decoder, "d")

    def mlp(params, prefix, n, h):
        for i in range(n):
            w, b = params[f"{prefix}{i}"]
            h = h @ w.T + b
            if i < n - 1:
                h = jnp.tanh(h)
        return h

    def model(x):
        p = {k: (numpyro.param(k + "w", v[0]), numpyro.param(k + "b", v[1])) for k, v in dec0.items()}
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", nd.Normal(0.0, 1.0).expand([50]).to_event(1))
            logits = mlp(p, "d", len(dec0), z)
            numpyro.sample("x", nd.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):
        p = {k: (numpyro.param(k + "w", v[0]), numpyro.param(k + "b", v[1])) for k, v in enc0.items()}
        with numpyro.plate("data", x.shape[0]):
            loc, raw = jnp.split(mlp(p, "e", len(enc0), x), 2, axis=-1)
            numpyro.sample("z", nd.Normal(loc, jax.nn.softplus(raw) + 1e-4).to_event(1))

    svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())
    x0 = jnp.zeros((batch_size, 784))
    state = svi.init(jax.random.PRNGKey(0), x0)
    update = jax.jit(svi.update)
    holder = {"state": state}

    def step(x):
        holder["state"], loss = update(holder["state"], jnp.asarray(x.reshape(x.shape[0], -1).cpu().numpy()))
        return loss

    def sync(loss):
        loss.block_until_ready()

    return step, sync


def measure(step, xs, sync):
    start = time.perf_counter()
    loss = None
    for x in xs:
        loss = step(x)
    sync(loss)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200, help="training steps per round and runner")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="vae", help="a zoo entry with a diagonal Normal guide and Bernoulli pixels")
    ap.add_argument("--net", default="mlp", choices=["mlp", "conv"])
    ap.add_argument("--no-numpyro", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads of torch and XLA (default: their own; 1 is steadier on a busy machine)")
    ap.add_argument("--warm-cache", action="store_true", help="let inductor use its on-disk caches (compile time then understated)")
    args = ap.parse_args()
    print(code_header(), flush=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        if args.threads == 1 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        # before jax is imported: XLA's CPU client reads it once
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={str(args.threads > 1).lower()}"
                                   f" intra_op_parallelism_threads={args.threads}").strip()
    if not args.warm_cache:
        torch._inductor.config.force_disable_caches = True  # the compile time a first run pays
    device = inference.resolve_device(args.device)
    torch.manual_seed(0)
    x = mnist_train(device)
    m = zoo.create(args.model, net=args.net).to(device)
    min_scale = m.guide.min_scale
    ref = PureTorch(copy.deepcopy(m.guide.encoder), copy.deepcopy(m.model.decoder), lr=1e-3, min_scale=min_scale)
    # copies with the same weights (a deepcopy would share m's Pyro param-store names)
    copies = []
    for _ in range(3):
        c = zoo.create(args.model, net=args.net).to(device)
        c.load_state_dict(m.state_dict())
        copies.append(c)
    compiled_ = Vaezoo(m, lr=1e-3, compile=True, x=next(batches(x, args.batch_size, 1, 0)))
    loss_compiled = Vaezoo(copies[2], lr=1e-3, compile=True)
    runners = {"vaezoo-compiled": compiled_.step, "vaezoo-loss-compiled": loss_compiled.step,
               "vaezoo-eager": Vaezoo(copies[0], lr=1e-3, compile=False).step,
               "pure-torch": ref.step, "pyro-svi": pyro_svi_runner(copies[1], 1e-3)}
    sync = (lambda loss: torch.cuda.synchronize()) if device.type == "cuda" else (lambda loss: float(loss))
    syncs = {name: sync for name in runners}
    if not args.no_numpyro and args.net == "mlp" and args.model == "vae":
        try:
            step, s = numpyro_runner(m.guide.encoder.net, m.model.decoder.net, 1e-3, args.batch_size)
            runners["numpyro-jit"], syncs["numpyro-jit"] = step, s
        except ImportError:
            print("(numpyro not installed: pip install vaezoo[jax] to add it)")
    # warm-up: the first validated call, allocator, compilation
    for name, step in runners.items():
        measure(step, batches(x, args.batch_size, 20, 0), syncs[name])
    compile_seconds = compiled_.compile_seconds
    times = {name: [] for name in runners}
    for r in range(args.rounds):
        for name, step in runners.items():
            t = measure(step, batches(x, args.batch_size, args.steps, r + 1), syncs[name])
            times[name].append(args.steps * args.batch_size / t)
    med = {name: statistics.median(ips) for name, ips in times.items()}
    ref_ips = med["pure-torch"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"model={args.model} net={args.net} device={device} torch={torch.__version__} threads={torch.get_num_threads()} cpus={cpus} "
          f"batch={args.batch_size} steps/round={args.steps} rounds={args.rounds}")
    print(f"{'runner':<20} {'images/s (median)':>18} {'min':>10} {'max':>10} {'vs pure-torch':>14}")
    for name, ips in times.items():
        print(f"{name:<20} {med[name]:>18.0f} {min(ips):>10.0f} {max(ips):>10.0f} {med[name] / ref_ips:>14.3f}")
    step_saved = args.batch_size / med["vaezoo-eager"] - args.batch_size / med["vaezoo-compiled"]  # seconds
    even = f"{compile_seconds / step_saved:.0f} steps" if step_saved > 0 else "never (not faster)"
    print(f"compile time: {compile_seconds:.1f} s (vaezoo-loss-compiled: {loss_compiled.compile_seconds:.1f} s); "
          f"break-even against vaezoo-eager after {even}")
    if "numpyro-jit" in med:
        print(f"vaezoo-compiled / numpyro-jit: {med['vaezoo-compiled'] / med['numpyro-jit']:.3f}")
    print(f"vaezoo-compiled / vaezoo-eager: {med['vaezoo-compiled'] / med['vaezoo-eager']:.3f}")
    # the guard of the Python values a compiled pair can reach (vaezoo.guards), part of every
    # compiled step above: its cost per call, against the compiled step's time
    calls = 20_000
    t0 = time.perf_counter()
    for _ in range(calls):
        compiled_.objective.guards_hold()
    guard_us = (time.perf_counter() - t0) / calls * 1e6
    step_us = args.batch_size / med["vaezoo-compiled"] * 1e6
    print(f"guard: {len(compiled_.objective._guard)} values, {guard_us:.1f} us a call, "
          f"{guard_us / step_us:.1%} of a vaezoo-compiled step ({step_us:.0f} us)")
    print(f"ratio: {med['vaezoo-compiled'] / ref_ips:.3f}")


if __name__ == "__main__":
    main()
