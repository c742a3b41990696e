"""MaskAAE on MNIST (Mondal et al., Table 2 and Figure 4c): ``mask-aae``, ``wae-mmd`` and ``vae`` at
latent sizes m in {8, 16, 32, 64}: active dimensions, the Frechet distance of prior samples to the
test images in the features of vaezoo's MNIST classifier, and the codes' NAC.

    VAEZOO_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python bench/mask_aae_mnist.py --epochs 5 \
        [--sizes 8 16 32 64] [--models mask-aae mask-aae-open wae-mmd vae] [--seeds 0] [--data mnist] \
        [--set training=paper mask_rule=tolerance mask_warmup=600 ...]

``--set`` applies to ``mask-aae`` and ``mask-aae-open`` alike (the open mask ignores the mask's own
fields), so the pair differs only in the mask.

The three entries share the networks (MLP 784-256-256-m and back, ReLU), the data (grey-level MNIST,
no binarization) and the reconstruction cost (a normal likelihood of sigma 0.3: the squared error /
2 sigma^2); they differ only in what matches the codes to N(0, I): the mask-aae's WGAN-GP critic and
mask, WAE-MMD's kernel, the VAE's KL. Batch 100, Adam lr 1e-3, one thread.

- active dimensions: ``mask-aae``: mask values alpha >= 0.1 (the paper's rule); ``vae``: active units
  (Burda et al. 2016: Var_x E_q[z_j] > 0.01); ``wae-mmd``: the same active-unit rule on its codes.
- Frechet distance: ``vaezoo.evaluation.quality.frechet_distance`` of 10,000 prior draws (decoder
  means) against the 10,000 test images (against each other the training and test images score
  about 1-2; see bench/RESULTS.md for the classifier).
- NAC: the mean over i != j of |Cov(z_i, z_j)| / sqrt(Var z_i Var z_j) of the test codes (posterior
  means for the vae), over the active dimensions only for ``mask-aae`` (the paper's rule, its
  supplementary material): 0 for codes matched to N(0, I).
Every run is cached in ``--out`` as JSON, so the script resumes and ``--no-train`` only reports.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vaezoo import data, traces, zoo  # noqa: E402
from vaezoo.evaluation.quality import frechet_distance  # noqa: E402
from vaezoo.fileio import write_json  # noqa: E402
from vaezoo.inference import Trainer  # noqa: E402
from vaezoo.provenance import code_header, source_commit  # noqa: E402

MODELS = ["mask-aae", "wae-mmd", "vae"]
COMMON = dict(hidden=(256, 256), activation="relu", likelihood="normal", likelihood_scale=0.3)


def create(name, m, overrides=None):
    extra = {"binarize": "none"} if name == "vae" else dict(overrides or {}) if name.startswith("mask-aae") else {}
    return zoo.create(name, data_shape=(1, 28, 28), latent_dim=m, **COMMON, **extra)


def run_name(name, m, seed, args):
    tag = "".join(f"-{kv}" for kv in args.set) if name.startswith("mask-aae") else ""
    return f"{name}{tag}-m{m}-seed{seed}"


@torch.no_grad()
def codes(model, x, chunk=1000):
    """The test codes: the encoder's value (Delta guides) or the posterior mean (vae), masked
    by the mask-aae's alpha."""
    out = torch.cat([traces.record(model.guide, xb).sites["z"]["fn"].mean for xb in x.split(chunk)])
    mask = getattr(model.model, "mask", None)
    return out if mask is None else out * mask.alpha()


def nac(z: torch.Tensor) -> float:
    if z.shape[1] < 2:
        return float("nan")
    corr = torch.corrcoef(z.T.double())
    off = ~torch.eye(z.shape[1], dtype=torch.bool)
    return float(corr[off].abs().mean())


def run_one(name, m, seed, args, train, test):
    out = Path(args.out) / run_name(name, m, seed, args)
    done = out / f"maae-{args.data}-e{args.epochs}.json"
    if done.exists():
        return json.loads(done.read_text())
    if args.no_train:  # only report what is cached
        return None
    torch.manual_seed(seed)
    model = create(name, m, dict(kv.split("=", 1) for kv in args.set))
    mask = getattr(model.model, "mask", None)
    trace = []  # the mask's active dimensions at the end of every epoch: has it stopped moving?

    def record(trainer, rec):
        if mask is not None:
            trace.append(int(mask.active()))

    trainer = Trainer(model.objective(), epochs=args.epochs, batch_size=100, lr=args.lr, seed=seed, out=out,
                      progress=False, metadata={"model": name, "latent_dim": m}, on_epoch_end=record)
    start = time.perf_counter()
    history = trainer.fit(train)
    seconds = time.perf_counter() - start
    model.eval()
    z = codes(model, test.data)
    if mask is not None:
        active = mask.alpha() >= 0.1
    else:
        active = z.var(0) > 0.01
    row = {
        "model": name, "set": args.set if name.startswith("mask-aae") else [], "m": m, "seed": seed, "epochs": args.epochs, "train_seconds": seconds,
        "active": int(active.sum()), "active_by_epoch": trace,
        "nac": nac(z[:, active] if mask is not None else z),
        "fd": frechet_distance(model, test.data, seed=seed),
        "last": {k: v for k, v in history[-1].items() if isinstance(v, (int, float))},
        "code": source_commit(),  # a cached row outlives the code that made it
    }
    write_json(done, row)
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS + ["mask-aae-open"],
                    help="mask-aae-open: the mask held open, the same critic and losses (the paper's baseline)")
    ap.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--data", default="mnist", choices=["mnist", "mnist-small"])
    ap.add_argument("--out", default="runs/maae-mnist")
    ap.add_argument("--set", nargs="*", action="extend", default=[], help="config overrides of mask-aae and mask-aae-open, key=value "
                    "(e.g. training=paper mask_rule=tolerance mask_warmup=600)")
    ap.add_argument("--no-train", action="store_true", help="only report the cached runs")
    args = ap.parse_args()
    print(code_header(), flush=True)
    torch.set_num_threads(1)
    train = data.load(args.data, split="train", binarize=None)
    test = data.load(args.data, split="test", binarize=None)
    rows = []
    for seed in args.seeds:
        for m in args.sizes:
            for name in args.models:
                row = run_one(name, m, seed, args, train, test)
                if row is not None:
                    rows.append(row)
    print("\ncommand: " + " ".join(shlex.quote(a) for a in sys.argv))
    print("| m | model | seed | active dims | by epoch | Frechet distance (classifier features) | NAC | train s |")
    print("| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: |")
    for r in sorted(rows, key=lambda r: (r["m"], args.models.index(r["model"]), r["seed"])):
        by_epoch = ", ".join(map(str, r.get("active_by_epoch") or [])) or "-"  # rows cached before the trace: -
        print(f"| {r['m']} | {r['model']} | {r['seed']} | {r['active']} | {by_epoch} | {r['fd']:.2f} | {r['nac']:.3f} "
              f"| {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
