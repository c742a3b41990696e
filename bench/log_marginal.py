"""Speed and memory of ``vaezoo.evaluation.log_marginal`` (importance sampling, K = 5000) on the zoo's
``vae`` (Burda et al. 2016 MLPs: 784-200-200-2x50 encoder, 50-200-200-784 Bernoulli decoder, tanh;
untrained, seeded weights: speed does not depend on training) and MNIST test images (the fixed
binarization), side by side in one run, in alternating rounds (medians reported), with:

- the float32 GEMM peak of this machine: ``torch.mm`` of the decoder's largest product;
- ``log_marginal(compile=True)`` (the figures the targets use) and the eager ``log_marginal``;
- a floor: the decoder and the Bernoulli log-likelihood alone, hand-written, for the same pairs;
- Pyro's ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)``, the IWAE-K bound, one
  datapoint at a time (Renyi sums over the data, so per-datapoint values need one call each);
- pythae's ``VAE.get_nll`` on the same torch modules (wrapped as pythae encoder/decoder), if
  pythae is installed (``pip install pythae``), with the fastest of a few batch sizes;
- the peak memory (RSS growth over a warmed-up process, in fresh subprocesses) of ``log_marginal``
  at K / 10, K and 10 K: it should not grow with K.

Achieved decoder throughput counts 2 K N (50*200 + 200*200 + 200*784) FLOPs for the decoder's
matrix products only (the encoder, the Bernoulli log-likelihood over 784 pixels and the guide are
overhead). The baselines run on subsets of the data, and their throughput is per datapoint.

    python bench/log_marginal.py [--n 64] [--k 5000] [--threads T] [--baseline-n 8] [--rounds 3] [--net conv]

The last lines printed are ratios against the targets.
"""

import argparse
import gzip
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaezoo.evaluation import log_marginal  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402

LATENT, HIDDEN, PIXELS = 50, 200, 784
DECODER_FLOPS = 2 * (LATENT * HIDDEN + HIDDEN * HIDDEN + HIDDEN * PIXELS)  # per (particle, datapoint)


# ----------------------------------------------------------------------------------------- setup
def networks():
    """The zoo's ``vae`` pair (model, guide, decoder, encoder), or identical hand-built ones."""
    torch.manual_seed(0)
    try:
        from vaezoo import zoo

        m = zoo.create("vae", data_shape=(1, 28, 28))
        m.model.eval()
        m.guide.eval()
        return m.model, m.guide, m.model.decoder, m.guide.encoder, "zoo 'vae'"
    except Exception as err:  # the zoo is another layer's: fall back to identical nets
        print(f"(zoo 'vae' unavailable: {err}; building the same networks here)")
    import pyro
    import pyro.distributions as dist
    import torch.nn.functional as F
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(PIXELS, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 2 * LATENT))

        def forward(self, x):
            return self.net(x.reshape(x.shape[:-3] + (PIXELS,)))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, PIXELS))

        def forward(self, z):
            return self.net(z).reshape(z.shape[:-1] + (1, 28, 28))

    enc, dec = Encoder().eval(), Decoder().eval()

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(3), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, raw = enc(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1))

    return model, guide, dec, enc, "hand-built"


def mnist_test(n):
    """The first ``n`` MNIST test images, binarized once with seed 0, as [n, 1, 28, 28] float32."""
    os.environ.setdefault("VAEZOO_DATA_DIR", str(REPO.parent / "shared" / "data"))
    try:
        from vaezoo import data

        return data.load("mnist", split="test", binarize="fixed", download=False).data[:n], "vaezoo.data (fixed binarization)"
    except Exception as err:
        print(f"(vaezoo.data.load unavailable: {err}; reading the IDX file here)")
    path = Path(os.environ["VAEZOO_DATA_DIR"]) / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    _, count, rows, cols = struct.unpack(">IIII", raw[:16])
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(count, 1, rows, cols)[:n]
    intensities = torch.from_numpy(images.astype(np.float32) / 255.0)
    return torch.bernoulli(intensities, generator=torch.Generator().manual_seed(0)), "IDX file (seeded binarization)"


def timed(fn, repeat=1):
    """The best of ``repeat`` wall times of ``fn()`` and its last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ------------------------------------------------------------------------------------- measures
def gemm_peak(rows=(4096, 8192, 16384)):
    """Best float32 GFLOP/s of torch.mm [rows, 200] x [200, 784], the decoder's largest product."""
    best = 0.0
    for m in rows:
        a, b = torch.randn(m, HIDDEN), torch.randn(HIDDEN, PIXELS)
        for _ in range(3):
            torch.mm(a, b)
        reps = max(3, int(2e10 / (2 * m * HIDDEN * PIXELS)))
        seconds, _ = timed(lambda: [torch.mm(a, b) for _ in range(reps)], repeat=3)
        best = max(best, 2 * m * HIDDEN * PIXELS * reps / seconds / 1e9)
    return best


def decoder_floor(decoder, x, k, pass_particles=128, pass_data=16):
    """Wall time of the decoder and the Bernoulli log-likelihood alone (no guide, no Pyro, no
    estimator) for the same K x N pairs, in passes of the estimator's default size: the floor any
    importance sampler of this model pays in eager PyTorch."""
    import torch.nn.functional as F

    n = x.shape[0]
    z = torch.randn(pass_particles, pass_data, LATENT)

    def run():
        with torch.no_grad():
            for _ in range(-(-k // pass_particles)):
                for c in range(0, n, pass_data):
                    xc = x[c : c + pass_data]
                    logits = decoder(z[:, : xc.shape[0]])
                    # -softplus(l) + x l: the log-likelihood in two passes over the logits
                    F.softplus(logits).addcmul_(xc, logits, value=-1).sum((-3, -2, -1))

    return timed(run)[0]


def renyi_per_datapoint(model, guide, x, k):
    """-RenyiELBO(alpha=0) loss, the IWAE-K bound, per datapoint."""
    import pyro
    from pyro.infer import RenyiELBO

    elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        return torch.tensor([-elbo.loss(model, guide, x[i : i + 1]) for i in range(x.shape[0])], dtype=torch.float64)


def pythae_model(encoder, decoder):
    """pythae's VAE around the same torch modules (shared weights)."""
    import torch.nn.functional as F
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Enc(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.encoder = encoder

        def forward(self, x):
            loc, raw = self.encoder(x).chunk(2, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=2 * torch.log(F.softplus(raw) + 1e-4))

    class Dec(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.decoder = decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.decoder(z)))

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    return VAE(model_config=config, encoder=Enc(), decoder=Dec()).eval()


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(k, n):
    """In a fresh process: the peak RSS growth (MiB) of one log_marginal run at K = k after a
    warm-up, from Linux's high-water mark reset through /proc/self/clear_refs (else ru_maxrss)."""
    model, guide, _, _, _ = networks()
    x, _ = mnist_test(n)
    log_marginal(model, guide, x[:2], num_samples=50, seed=0)  # imports, allocator warm-up
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
        log_marginal(model, guide, x, num_samples=k, seed=0)
        after = _status_kib("VmHWM")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        log_marginal(model, guide, x, num_samples=k, seed=0)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"k": k, "growth_mib": (after - before) / 1024, "peak_mib": after / 1024}))


def memory(k, n, threads):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, __file__, "--memory-child", str(k), "--n", str(n), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def conv_speed(args):
    """``--net conv``: the zoo's convolutional ``vae`` (untrained, seeded), compiled against eager
    ``log_marginal`` in alternating rounds (no FLOP accounting: the baselines above are MLP-only)."""
    from vaezoo import zoo

    torch.manual_seed(0)
    m = zoo.create("vae", data_shape=(1, 28, 28), net="conv").eval()
    x, source = mnist_test(args.n)
    print(f"networks: zoo 'vae' net=conv; data: {x.shape[0]} MNIST test images from {source}; K = {args.k}, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    compile_seconds, _ = timed(lambda: log_marginal(m.model, m.guide, x[:16], num_samples=256, seed=0, compile=True))
    rates = {"compiled": [], "eager": []}
    for _ in range(args.rounds):
        t, fast = timed(lambda: log_marginal(m.model, m.guide, x, num_samples=args.k, seed=0, compile=True))
        rates["compiled"].append(args.n / t)
        t, ref = timed(lambda: log_marginal(m.model, m.guide, x, num_samples=args.k, seed=0))
        rates["eager"].append(args.n / t)
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"log_marginal(compile=True) {med['compiled']:.2f} datapoints/s, eager {med['eager']:.2f} (medians of {args.rounds})")
    print(f"compiling the model pass: {compile_seconds:.1f} s; largest |log p(x) compiled - eager|: "
          f"{(fast.log_px - ref.log_px).abs().max().item():.2e} nats")
    print(f"ratio compiled / eager log_marginal datapoints/s: {med['compiled'] / med['eager']:.2f}")


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64, help="datapoints for log_marginal")
    p.add_argument("--k", type=int, default=5000, help="particles per datapoint")
    p.add_argument("--baseline-n", type=int, default=8, help="datapoints for the Pyro and pythae baselines")
    p.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (medians reported)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--memory-n", type=int, default=8, help="datapoints for the memory runs")
    p.add_argument("--net", default="mlp", choices=["mlp", "conv"], help="conv: compiled against eager only")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch._inductor.config.force_disable_caches = True  # the compile time a first run pays
    if args.memory_child is not None:
        return memory_child(args.memory_child, args.n)
    print(code_header(), flush=True)
    if args.net == "conv":
        return conv_speed(args)

    k, n, nb = args.k, args.n, args.baseline_n
    model, guide, decoder, encoder, nets = networks()
    x, source = mnist_test(max(n, nb))
    print(f"networks: {nets}; data: {x.shape[0]} MNIST test images from {source}")
    load = os.getloadavg()[0]
    print(f"K = {k}, torch {torch.__version__}, {args.threads} thread(s), load average {load:.2f} on {os.cpu_count()} cores")

    log_marginal(model, guide, x[:8], num_samples=100, seed=0)  # warm-up (imports ArviZ)
    # the compiled model pass: built once per pass shape, kept with the model for later calls
    compile_seconds, _ = timed(lambda: log_marginal(model, guide, x[:16], num_samples=256, seed=0, compile=True))
    pv, py_batch = None, None
    try:
        pv = pythae_model(encoder, decoder)
    except ImportError as err:
        print(f"(pythae not installed: {err}; pip install pythae to compare)")
    else:  # its fastest of a few batch sizes (dividing K: it draws K // batch_size batches)
        speeds = {}
        for batch in [b for b in (k, 1000, 500) if b <= k and k % b == 0]:
            with torch.no_grad():
                speeds[batch] = timed(lambda: pv.get_nll(x[:2], n_samples=k, batch_size=batch))[0]
        py_batch = min(speeds, key=speeds.get)

    # Rounds alternate the contenders so that a busy machine slows them alike; medians are reported.
    rates = {"peak": [], "floor": [], "vaezoo": [], "vaezoo-eager": [], "renyi": [], "pythae": []}  # GFLOP/s, datapoints/s
    for _ in range(args.rounds):
        rates["peak"].append(gemm_peak())
        rates["floor"].append(n / decoder_floor(decoder, x[:n], k))
        t, res = timed(lambda: log_marginal(model, guide, x[:n], num_samples=k, seed=0, compile=True))
        rates["vaezoo"].append(n / t)
        t, res_eager = timed(lambda: log_marginal(model, guide, x[:n], num_samples=k, seed=0))
        rates["vaezoo-eager"].append(n / t)
        t, ry = timed(lambda: renyi_per_datapoint(model, guide, x[:nb], k))
        rates["renyi"].append(nb / t)
        if pv is not None:
            torch.manual_seed(2)
            with torch.no_grad():
                t, py_ll = timed(lambda: pv.get_nll(x[:nb], n_samples=k, batch_size=py_batch))
            rates["pythae"].append(nb / t)
    med = {name: statistics.median(v) for name, v in rates.items() if v}
    peak = med["peak"]

    def row(name, key, value):
        gflops = DECODER_FLOPS * k * med[key] / 1e9
        shown = "" if math.isnan(value) else f"{value:.2f}"
        return (name, f"{med[key]:.2f}", f"{gflops:.1f}", f"{100 * gflops / peak:.0f}%", shown)

    rows = [("float32 GEMM peak [M,200]x[200,784]", "", f"{peak:.1f}", "", "")]
    rows.append(row("floor: decoder + Bernoulli log-lik only", "floor", math.nan))
    rows.append(row("vaezoo log_marginal(compile=True)", "vaezoo", res.log_px[:nb].mean().item()))
    rows.append(row("vaezoo log_marginal (eager)", "vaezoo-eager", res_eager.log_px[:nb].mean().item()))
    rows.append(row("Pyro RenyiELBO(alpha=0), per datapoint", "renyi", ry.mean().item()))
    if pv is not None:
        rows.append(row(f"pythae VAE.get_nll (batch_size={py_batch})", "pythae", py_ll))

    mem = [memory(kk, args.memory_n, args.threads) for kk in (k // 10, k, 10 * k)]

    header = ("", "datapoints/s", "decoder GFLOP/s", "of peak", f"mean log p(x), first {nb}")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(5)]
    print(f"\nmedians of {args.rounds} alternating rounds; log_marginal on {n} datapoints, the baselines on {nb}")
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()
    for m in mem:
        print(
            f"log_marginal peak RSS growth at K = {m['k']}: {m['growth_mib']:.1f} MiB "
            f"(process peak {m['peak_mib']:.0f} MiB, {args.memory_n} datapoints)"
        )
    print(
        f"log_marginal: mean per-datapoint stderr {res.stderr.mean().item():.3f} nats; "
        f"k-hat > 0.7 on {100 * res.frac_khat_above():.0f}% (untrained networks: a poor proposal)"
    )
    print()
    gflops = DECODER_FLOPS * k * med["vaezoo"] / 1e9
    print(f"compiling the model pass (first compile=True call, 16 datapoints, K = 256): {compile_seconds:.1f} s; "
          f"largest |log p(x) compiled - eager|: {(res.log_px - res_eager.log_px).abs().max().item():.2e} nats")
    print(f"ratio compiled / eager log_marginal datapoints/s: {med['vaezoo'] / med['vaezoo-eager']:.2f}")
    print(f"ratio decoder GFLOP/s / GEMM peak: {gflops / peak:.2f} (target >= 0.50)")
    print(f"ratio vaezoo / floor (decoder + likelihood alone) datapoints/s: {med['vaezoo'] / med['floor']:.2f}")
    print(f"ratio vaezoo / Pyro RenyiELBO datapoints/s: {med['vaezoo'] / med['renyi']:.2f}")
    if pv is not None:
        print(f"ratio vaezoo / pythae datapoints/s: {med['vaezoo'] / med['pythae']:.2f} (target >= 3)")
    growth = [max(m["growth_mib"], 1.0) for m in mem]
    print(
        f"ratio peak RSS growth K={mem[1]['k']} / K={mem[0]['k']}: {growth[1] / growth[0]:.2f}, "
        f"K={mem[2]['k']} / K={mem[0]['k']}: {growth[2] / growth[0]:.2f} (target: flat, ~1; "
        "allocator noise is some 10s of MiB)"
    )

if __name__ == "__main__":
    main()
