"""Time of log_prob and rsample of vaezoo's structured Gaussians against the equivalent dense
MultivariateNormal, for d = 16 .. 1024, measured side by side in one run; prints a table and the
fitted scaling exponents (log-log slope of time against d).

    python bench/distributions.py [--batch 128] [--dtype float32] [--threads 1]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch.distributions import MultivariateNormal

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaezoo.distributions import AR1Normal, DiagonalMatrixNormal, MatrixNormal  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402

DIMS = [16, 64, 256, 1024]
OPS = ["log_prob", "rsample"]


def timeit(fn, min_time=0.05, repeats=7):
    """Best over ``repeats`` of the mean time of ``fn()`` over enough calls to last ``min_time``
    (the minimum is the estimate least disturbed by other processes on a shared machine)."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time / 5 or calls < 2:
        fn()
        calls += 1
    number = max(1, int(min_time * calls / (time.perf_counter() - start)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def tril(batch, k, dtype):
    a = 0.1 * torch.randn(batch + (k, k), dtype=dtype).tril(-1)
    return a + torch.diag_embed(0.5 + torch.rand(batch + (k,), dtype=dtype))


def positive(shape, dtype):
    return 0.5 + torch.rand(shape, dtype=dtype)


def vec(x):
    return x.mT.flatten(-2)  # column-stacking, vec(X) ~ N(vec(M), V (x) U)


def pairs(d, batch, dtype):
    """``(name, structured, dense equivalent, flatten)`` at dimension d."""
    out = []
    side = math.isqrt(d)
    if side * side == d:
        loc = torch.randn(batch + (side, side), dtype=dtype)
        L_r, L_c = tril(batch, side, dtype), tril(batch, side, dtype)
        # chol(V (x) U) = L_c (x) L_r, batched
        kron = (L_c[..., :, None, :, None] * L_r[..., None, :, None, :]).reshape(batch + (d, d))
        out.append((
            "MatrixNormal (full)",
            MatrixNormal(loc, L_r, L_c, validate_args=False),
            MultivariateNormal(vec(loc), scale_tril=kron, validate_args=False),
            vec,
        ))
        a, b = positive(batch + (side,), dtype), positive(batch + (side,), dtype)
        scale = vec(a.unsqueeze(-1) * b.unsqueeze(-2))
        out.append((
            "DiagonalMatrixNormal",
            DiagonalMatrixNormal(loc, a, b, validate_args=False),
            MultivariateNormal(vec(loc), scale_tril=torch.diag_embed(scale), validate_args=False),
            vec,
        ))
    loc = torch.randn(batch + (d,), dtype=dtype)
    scale, rho = positive(batch, dtype), 1.8 * torch.rand(batch, dtype=dtype) - 0.9
    k = torch.arange(d)
    cov = scale[..., None, None] ** 2 * rho[..., None, None] ** (k[:, None] - k).abs().to(dtype)
    out.append((
        "AR1Normal",
        AR1Normal(loc, scale, rho, validate_args=False),
        MultivariateNormal(loc, scale_tril=torch.linalg.cholesky(cov), validate_args=False),
        lambda x: x,
    ))
    return out


def slope(times):
    """Least-squares slope of log(time) against log(d) over the dict ``{d: time}``."""
    x = torch.tensor(list(times), dtype=torch.float64).log()
    y = torch.tensor(list(times.values()), dtype=torch.float64).log()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def measure(batch, dtype):
    """``{(name, kind, op): {d: seconds}}`` and ``{(name, d): max |log_prob - dense log_prob|}``."""
    times, errors = {}, {}
    with torch.no_grad():
        for d in DIMS:
            for name, structured, dense, flatten in pairs(d, batch, dtype):
                x = structured.sample()
                cases = [("structured", structured, x), ("dense", dense, flatten(x))]
                for kind, dist, value in cases:
                    ops = {"log_prob": lambda: dist.log_prob(value), "rsample": dist.rsample}
                    for op in OPS:
                        times.setdefault((name, kind, op), {})[d] = timeit(ops[op])
                err = structured.log_prob(x) - dense.log_prob(flatten(x))
                errors[name, d] = err.abs().max().item()
    return times, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="draws per call: large enough that arithmetic, not per-call overhead, dominates")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest)")
    args = parser.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(args.threads)
    # The dense AR(1) Cholesky factor holds rho^k down to subnormal floats, which would make the
    # dense baseline slow for a reason unrelated to its O(d^2) cost.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    times, errors = measure((args.batch,), getattr(torch, args.dtype))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.dtype}, "
          f"batch {args.batch}; microseconds per call (best of 7)\n")
    names = list(dict.fromkeys(name for name, _, _ in times))
    header = (f"{'distribution':<22}{'d':>6}  {'log_prob':>9} {'dense':>9} {'ratio':>7}  "
              f"{'rsample':>9} {'dense':>9} {'ratio':>7}  {'|dlogp|':>8}")
    print(header)
    print("-" * len(header))
    for name in names:
        for d in times[name, "structured", "log_prob"]:
            cells = []
            for op in OPS:
                ours, dense = times[name, "structured", op][d], times[name, "dense", op][d]
                cells.append(f"{ours * 1e6:>9.1f} {dense * 1e6:>9.1f} {dense / ours:>6.1f}x")
            print(f"{name:<22}{d:>6}  {cells[0]}  {cells[1]}  {errors[name, d]:>8.1e}")
    print("\nscaling exponent = slope of log(time) against log(d): over all d / over the two "
          "largest d")
    print(f"{'distribution':<22}{'op':<10}  {'structured':>13} {'dense':>13}")
    for name in names:
        for op in OPS:
            cells = []
            for kind in ["structured", "dense"]:
                t = times[name, kind, op]
                largest = dict(list(t.items())[-2:])
                cells.append(f"{slope(t):.2f} / {slope(largest):.2f}")
            print(f"{name:<22}{op:<10}  {cells[0]:>13} {cells[1]:>13}")


if __name__ == "__main__":
    main()
