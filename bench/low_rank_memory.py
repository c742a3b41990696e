"""Peak memory of one SOS-VAE likelihood evaluation (vaezoo's ``LowRankNormal``: construction and
``log_prob`` of one image) against one n x n matrix, and against a dense ``MultivariateNormal`` at
the sizes where that fits, to show how each scales with n = C H W. Prints one table.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/low_rank_memory.py [RANK] [DTYPE] [DENSE_MAX_N]

Two measures per evaluation, each in fresh processes so that nothing else shares them:
- tensor peak: the largest total of live tensor bytes during the call above what was live before it
  (the inputs), from the allocation events of ``torch.profiler`` (``profile_memory=True``); exact for
  torch's allocations, blind to LAPACK's own workspace;
- RSS: the peak resident set (``ru_maxrss`` of the child, from ``os.wait4``) of a process that
  builds the inputs and evaluates, minus that of the same process that only builds them; it sees
  everything, to the page, and reads 0 when the call stays below the setup's own high-water mark.
"""

import json
import os
import subprocess
import sys

import torch

from vaezoo.models.low_rank_likelihood import LowRankNormal
from vaezoo.provenance import code_header

IMAGES = {1024: "1x32x32", 3072: "3x32x32", 4096: "1x64x64", 12288: "3x64x64"}


def inputs(n: int, r: int, dtype: torch.dtype):
    """A decoder's outputs for one image of n pixels (the SOS-VAE's scales: factor entries of 1e-2,
    the diagonal at its floor 1e-5) and the image."""
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(1, n, generator=g, dtype=dtype)
    factor = 1e-2 * torch.randn(1, n, r, generator=g, dtype=dtype)
    diag = torch.full((1, n), 1e-5, dtype=dtype)
    x = torch.rand(1, n, generator=g, dtype=dtype)
    return loc, factor, diag, x


def evaluate(kind: str, loc, factor, diag, x) -> torch.Tensor:
    if kind == "low-rank":
        return LowRankNormal(loc, factor, diag, event_dim=1).log_prob(x)
    # the dense likelihood a decoder's (P, D) would give without Woodbury: the n x n covariance,
    # its Cholesky factor, a triangular solve
    cov = factor @ factor.mT + torch.diag_embed(diag)
    return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov).log_prob(x)


def tensor_peak(fn) -> int:
    """The peak of live tensor bytes allocated during ``fn()`` above those live before it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # the profiler's raw allocation records (+bytes) and frees (-bytes), in time order: its tables
    # give per-operator totals, not the running peak
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def child(kind: str, n: int, r: int, dtype: str, mode: str) -> None:
    torch.set_num_threads(1)
    # a first call on a tiny problem loads what is loaded once (LAPACK, lazy modules), in both modes
    evaluate(kind, *inputs(8, 2, getattr(torch, dtype)))
    args = inputs(n, r, getattr(torch, dtype))
    if mode == "profile":
        print(json.dumps({"tensor_peak": tensor_peak(lambda: evaluate(kind, *args))}))
    elif mode == "run":
        evaluate(kind, *args)


def max_rss(*argv) -> int:
    """Peak resident set, in bytes, of one child process running ``child(*argv)``."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *map(str, argv)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} exited with {proc.returncode}")
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def measure(kind: str, n: int, r: int, dtype: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(r), dtype, "profile"],
                         check=True, capture_output=True, text=True).stdout
    rss = max_rss(kind, n, r, dtype, "run") - max_rss(kind, n, r, dtype, "setup")
    return dict(json.loads(out.strip().splitlines()[-1]), rss=max(rss, 0))


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f} MB" if nbytes >= 2**20 / 10 else f"{nbytes / 2**10:,.0f} kB"


def main(rank: int = 25, dtype: str = "float32", dense_max: int = 4096) -> None:
    print(code_header(), flush=True)
    size = torch.finfo(getattr(torch, dtype)).bits // 8
    print(f"rank {rank}, {dtype}, 1 thread, one image; n x n = {size} n^2 bytes; torch {torch.__version__}")
    print("| n (image) | likelihood | tensor peak | / n x n | RSS peak | / n x n |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for n, image in IMAGES.items():
        square = size * n * n
        for kind in ("low-rank", "dense"):
            if kind == "dense" and n > dense_max:
                print(f"| {n} ({image}) | dense | not run (n x n = {mb(square)}) | | | |")
                continue
            m = measure(kind, n, rank, dtype)
            print(f"| {n} ({image}) | {kind} | {mb(m['tensor_peak'])} | {m['tensor_peak'] / square:.4f} "
                  f"| {mb(m['rss'])} | {m['rss'] / square:.4f} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, n, r, dtype, mode = sys.argv[2:]
        child(kind, int(n), int(r), dtype, mode)
    else:
        main(*(int(a) if i != 1 else a for i, a in enumerate(sys.argv[1:])))
