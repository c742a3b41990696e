"""How tight is importance sampling on a trained model? Importance-sampled log p(x) (K particles from
the guide) against AIS from the guide with growing numbers of annealing steps, per test image, on
a model trained by ``bench/mnist_vae.py``. AIS is a stochastic lower bound that tightens with
steps: where it rises above the IS estimate, IS underestimates log p(x) by at least that much.

    VAEZOO_DATA_DIR=../shared/data python bench/ais_vs_is.py --run bench/runs/vae-seed0 \
        [--model vae] [--n 100] [--samples 5000] [--steps 100 300 1000] [--chains 16]
"""

import argparse
import time

from vaezoo import data, evaluation, zoo
from vaezoo.inference import checkpoint as ckpt
from vaezoo.provenance import code_header


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="bench/runs/vae-seed0", help="a run directory of bench/mnist_vae.py")
    ap.add_argument("--model", default="vae")
    ap.add_argument("--n", type=int, default=100, help="first N images of the (fixed-binarized) test set")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--chains", type=int, default=16)
    args = ap.parse_args()
    print(code_header(), flush=True)

    m = zoo.create(args.model, data_shape=(1, 28, 28))
    m.objective().load_state_dict(ckpt.load(f"{args.run}/checkpoint.pt")["objective"])
    m.eval()
    x = data.load("mnist", split="test", binarize="fixed").data[: args.n]
    print(f"{args.model} from {args.run}, first {args.n} MNIST test images; nats, mean over images (± se)")

    t = time.perf_counter()
    r = evaluation.log_marginal(m.model, m.guide, x, num_samples=args.samples, seed=0)
    se = r.log_px.std().item() / args.n**0.5
    print(
        f"IS K={args.samples}: log p(x) {r.log_px.mean():.3f} ± {se:.3f}, ELBO {r.elbo.mean():.3f}, "
        f"k-hat > 0.7 on {r.frac_khat_above():.0%} ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    for steps in args.steps:
        t = time.perf_counter()
        a = evaluation.ais(m.model, m.guide, x, steps=steps, chains=args.chains, seed=0)
        d = a.log_px.double() - r.log_px
        print(
            f"AIS {steps} steps x {args.chains} chains: log p(x) {a.log_px.mean():.3f}; AIS - IS per image: "
            f"mean {d.mean():.3f} ± {d.std().item() / args.n**0.5:.3f}, above IS on {(d > 0).double().mean():.0%} "
            f"({time.perf_counter() - t:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
