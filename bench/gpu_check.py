"""The figures of the GPU check (``bench/gpu_check.sh`` runs it after the CUDA tests), measured in one
process on the device:

- training throughput, images a second: the compiled and the eager ``vae`` against the same
  hand-written PyTorch loop (and NumPyro's jit where JAX runs): ``bench/svi_throughput.py`` on the
  device, its ratios printed as they are;
- ``log_marginal`` at K = 5000: datapoints a second and the share of the device's measured
  matrix-multiply peak that the decoder's products reach (TF32 allowed for both, and the strict
  FP32 peak beside it);
- one epoch of a conv entry (``vae --set net=conv``) and a spatial entry (``spatial-vae-mvn``) on
  the shipped MNIST subset, through the ``Trainer``;
- whether a compiled training step synchronizes with the host (``torch.cuda.set_sync_debug_mode``);
- peak device memory of each part.

    python bench/gpu_check.py [--device cuda] [--quick]

``--quick`` (tiny sizes) checks the script itself on a CPU. The figures are printed and, when the
environment variable ``OUT`` names a folder, written to ``OUT/gpu_check.json``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

from vaezoo import data, evaluation, inference, zoo
from vaezoo.inference import compiled
from vaezoo.provenance import code_header

HERE = Path(__file__).resolve().parent
figures = {}


def report(key, value, text):
    figures[key] = value
    print(text, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device, part):
    if device.type == "cuda":
        report(f"peak_memory_gib.{part}", torch.cuda.max_memory_allocated(device) / 2**30,
               f"  peak memory ({part}): {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        torch.cuda.reset_peak_memory_stats(device)


def matmul_peak(device, n, tf32):
    """TFLOP/s of an n x n x n float32 matrix product, the best of a few."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * n**3 / best / 1e12


def throughput(device, quick):
    cmd = [sys.executable, str(HERE / "svi_throughput.py"), "--device", str(device), "--rounds", "1" if quick else "3",
           "--steps", "20" if quick else "300"]
    if quick:
        cmd.append("--no-numpyro")
    out = subprocess.run(cmd, capture_output=True, text=True)
    print(out.stdout, out.stderr[-2000:] if out.returncode else "", flush=True)
    figures["svi_throughput"] = out.stdout
    for line in out.stdout.splitlines():
        if line.startswith("ratio:"):
            report("compiled_vs_pure_torch", float(line.split()[-1]), f"  compiled / pure PyTorch: {line.split()[-1]}")
        if line.startswith("vaezoo-compiled / numpyro-jit:"):
            report("compiled_vs_numpyro", float(line.split()[-1]), f"  compiled / NumPyro jit: {line.split()[-1]}")


def log_marginal_rate(device, quick):
    k, n = (50, 16) if quick else (5000, 500)
    torch.backends.cuda.matmul.allow_tf32 = True
    pyro.set_rng_seed(0)
    m = zoo.create("vae").to(device)
    x = data.load("mnist-small", split="test", binarize="fixed").data[: n].to(device)
    evaluation.log_marginal(m.model, m.guide, x[: max(2, n // 10)], num_samples=k, seed=0, compile=True)  # compiles
    sync(device)
    start = time.perf_counter()
    result = evaluation.log_marginal(m.model, m.guide, x, num_samples=k, seed=0, compile=True)
    sync(device)
    seconds = time.perf_counter() - start
    rate = n / seconds
    flops = 2 * k * (50 * 200 + 200 * 200 + 200 * 784)  # the decoder's products, per datapoint
    peak_tf32 = matmul_peak(device, 1024 if quick else 8192, tf32=True)
    peak_fp32 = matmul_peak(device, 1024 if quick else 8192, tf32=False)
    torch.backends.cuda.matmul.allow_tf32 = True
    report("log_marginal_datapoints_per_s", rate, f"  log_marginal K={k}: {rate:.1f} datapoints/s ({n} in {seconds:.2f} s), "
           f"mean log p(x) {float(result.log_px.mean()):.2f} (untrained weights)")
    report("matmul_peak_tflops", {"tf32": peak_tf32, "fp32": peak_fp32},
           f"  matmul peak: {peak_tf32:.1f} TFLOP/s with TF32, {peak_fp32:.1f} strict FP32")
    share = rate * flops / 1e12 / peak_tf32
    report("log_marginal_share_of_tf32_peak", share, f"  log_marginal decoder products: {rate * flops / 1e12:.1f} TFLOP/s, "
           f"{share:.0%} of the TF32 peak")


def one_epoch(device, quick):
    train = data.load("mnist-small", split="train", binarize="dynamic")
    if quick:
        train = torch.bernoulli(train.data[:256], generator=torch.Generator().manual_seed(0))  # a fixed binarization
    for name, overrides in (("vae", {"net": "conv"}), ("spatial-vae-mvn", {})):
        pyro.set_rng_seed(0)
        m = zoo.create(name, **overrides)
        trainer = inference.Trainer(m.objective(), epochs=2, batch_size=128, device=device, progress=False)
        history = trainer.fit(train)
        label = name + ("-conv" if overrides else "")
        report(f"epoch_seconds.{label}", history[-1]["seconds"],
               f"  {label}: {history[-1]['seconds']:.2f} s an epoch (the second; {len(train)} images, batch 128)")
        peak_memory(device, label)


def host_syncs(device):
    """Three compiled training steps under sync debug mode "error": a host synchronization raises."""
    if device.type != "cuda":
        return report("host_sync", "n/a (not CUDA)", "  host sync check: n/a on a CPU")
    pyro.set_rng_seed(0)
    m = zoo.create("vae").to(device)
    objective = m.objective(compile=True)
    opt = torch.optim.Adam(objective.parameters(), lr=1e-3, fused=True)
    x = data.load("mnist-small", split="train").data[:128].to(device)
    with torch.no_grad():
        objective(torch.bernoulli(x))
    step = compiled.TrainingStep(objective, opt, None, x, binarize=True)
    step(x)
    sync(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            objective.guards_hold()
            step(x)
        verdict = "none"
    except RuntimeError as e:
        verdict = f"synchronizes: {str(e).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    report("host_sync", verdict, f"  host synchronizations in a compiled training step: {verdict}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself (on a CPU)")
    args = ap.parse_args()
    print(code_header(), flush=True)
    warnings.filterwarnings("ignore", category=UserWarning)
    device = inference.resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report("device", name, f"device {name}, torch {torch.__version__}, pyro {pyro.__version__}, {time.strftime('%Y-%m-%d')}")
    parts = [("throughput", throughput), ("log_marginal", log_marginal_rate), ("one epoch", one_epoch)]
    for label, part in parts:
        print(f"== {label}", flush=True)
        start = time.perf_counter()
        try:
            part(device, args.quick)
        except Exception as e:  # one part failing must not hide the others' figures
            report(f"error.{label}", f"{type(e).__name__}: {e}", f"  FAILED: {type(e).__name__}: {e}")
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
        peak_memory(device, label)
    print("== host synchronizations", flush=True)
    try:
        host_syncs(device)
    except Exception as e:
        report("error.host_sync", f"{type(e).__name__}: {e}", f"  FAILED: {type(e).__name__}: {e}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(figures, indent=1, default=str))
    return 1 if any(k.startswith("error.") for k in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
