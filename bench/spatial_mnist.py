"""The spatial VAEs' experiment (issue 10): the conv ``vae`` and every spatial VAE, decoders of matched
size, trained to one budget and seeds on mnist-small (real MNIST, the first 10,000 training and 2,000
test images); parameter counts, times, test ELBO, importance-sampled log p(x) and one PNG of samples.

    VAEZOO_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python bench/spatial_mnist.py --epochs 3 \
        [--models vae spatial-vae-naive ...] [--seeds 0 1 2] [--samples 100] [--eval-n 200] [--no-train]

Each (model, seed) is cached in ``--out`` as JSON, so two halves can run in parallel processes and a
last invocation with every model prints the whole table and writes the PNG from the cached samples.
"""

import argparse
import io
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vaezoo import data, evaluation, zoo  # noqa: E402
from vaezoo.evaluation.figures import image_grid  # noqa: E402
from vaezoo.fileio import atomic_write_bytes, write_json  # noqa: E402
from vaezoo.inference import Trainer  # noqa: E402
from vaezoo.provenance import code_header, source_commit  # noqa: E402

MODELS = ["vae", "spatial-vae-naive", "spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full"]
#: two ways to match the decoders' sizes on 28x28: ``wide`` widens the spatial decoders to the conv
#: vae's default decoder (width 315: 839,625 parameters against 852,321); ``narrow`` keeps the spatial
#: decoders' default (width 64: 42,593) and narrows the conv vae's decoder to 2 maps of 7x7 after its
#: 256 units, then 32 of 14x14 (39,811): the same deconvolution stack fed by a vector through a
#: linear layer instead of by latent maps
MATCH = {
    "wide": ({"net": "conv"}, {"decoder_width": 315}),
    "narrow": ({"net": "conv", "decoder_channels": (2, 32)}, {"decoder_width": 64}),
}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def create(name, args, shape):
    overrides = MATCH[args.match][0 if name == "vae" else 1]
    return zoo.create(name, data_shape=shape, **overrides)


def run_one(name, seed, args, train, test):
    out = Path(args.out) / f"{name}-seed{seed}"
    done = out / f"spatial-{args.data}-e{args.epochs}-K{args.samples}-n{args.eval_n}-{args.match}.json"
    if done.exists():  # trained and evaluated at this budget already (e.g. by the other half)
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    m = create(name, args, tuple(train.shape))
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(m.objective(), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                      out=out, progress=False, metadata={"model": name})
    start = time.perf_counter()
    trainer.fit(train)
    train_seconds = time.perf_counter() - start
    m.eval()
    test_terms = trainer.evaluate(test)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(0, 10_000, 1000):
            m.sample(1000)
        gen_seconds = time.perf_counter() - start
        torch.manual_seed(0)
        torch.save(m.sample(64).cpu(), out / f"samples64-{args.data}-{args.match}-e{args.epochs}.pt")
    start = time.perf_counter()
    result = evaluation.log_marginal(m.model, m.guide, test.data[: args.eval_n], num_samples=args.samples, seed=seed)
    row = {
        "model": name,
        "seed": seed,
        "epochs": args.epochs,
        "encoder_params": count(m.guide.encoder),
        "decoder_params": count(m.model.decoder),
        "encoder_outputs": int(m.guide.encoder(test.data[:1]).shape[-1]),
        "epoch_seconds": statistics.mean(r["seconds"] for r in trainer.history),
        "train_seconds": train_seconds,
        "gen10k_seconds": gen_seconds,
        "test_elbo": -test_terms["loss"],
        "log_px": float(result.log_px.mean()),
        "log_px_se": float(result.log_px.std() / result.log_px.numel() ** 0.5),
        "khat_above_0.7": float((result.khat > 0.7).float().mean()),
        "eval_seconds": time.perf_counter() - start,
        "code": source_commit(),  # a cached row outlives the code that made it
    }
    write_json(done, row)
    print(json.dumps(row), flush=True)
    return row


def mean_sd(values, fmt=".2f"):
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def table(rows, args):
    print()
    print("command: " + " ".join(shlex.quote(a) for a in sys.argv))
    sizes = "first 10,000 train / 2,000 test" if args.data == "mnist-small" else "60,000 train / 10,000 test"
    print(f"{args.data} (real MNIST: {sizes}), {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam lr {args.lr}, dynamic binarization (train), fixed (test); log p(x): K={args.samples} on the first "
          f"{args.eval_n} test images; decoders matched {args.match}: {MATCH[args.match]}")
    head = "| model | seed | enc params | dec params | enc outputs | s/epoch | s/10k samples | test ELBO | log p(x) (IS) | k-hat > 0.7 |"
    print(head)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models:
        rs = [r for r in rows if r["model"] == name]
        if not rs:
            continue
        lpx = mean_sd(r["log_px"] for r in rs) if len(rs) > 1 else f"{rs[0]['log_px']:.2f} ± {rs[0]['log_px_se']:.2f} (se)"
        print(f"| **{name}** | mean ± sd ({len(rs)}) | {rs[0]['encoder_params']:,} | {rs[0]['decoder_params']:,} "
              f"| {rs[0]['encoder_outputs']} | {mean_sd([r['epoch_seconds'] for r in rs], '.1f')} "
              f"| {mean_sd(r['gen10k_seconds'] for r in rs)} | {mean_sd(r['test_elbo'] for r in rs)} | {lpx} "
              f"| {mean_sd((100 * r['khat_above_0.7'] for r in rs), '.1f')}% |")
        for r in rs:
            print(f"| {name} | {r['seed']} | | | | {r['epoch_seconds']:.1f} | {r['gen10k_seconds']:.2f} | {r['test_elbo']:.2f} "
                  f"| {r['log_px']:.2f} ± {r['log_px_se']:.2f} (se) | {100 * r['khat_above_0.7']:.1f}% |")


def figure(args):
    """The seed-0 runs' 64 samples (8x8 grids), one per model, left to right in ``--models`` order."""
    from PIL import Image, ImageDraw

    grids, names = [], []
    for name in args.models:
        path = Path(args.out) / f"{name}-seed0" / f"samples64-{args.data}-{args.match}-e{args.epochs}.pt"
        if path.exists():
            grids.append(image_grid(torch.load(path)))
            names.append(name)
    if not grids:
        return
    h, w = grids[0].shape
    scale, gap, label = 2, 16, 20
    canvas = Image.new("L", (len(grids) * (w * scale + gap) - gap, h * scale + label), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (g, name) in enumerate(zip(grids, names)):
        left = i * (w * scale + gap)
        canvas.paste(Image.fromarray(np.asarray(g)).resize((w * scale, h * scale), Image.NEAREST), (left, label))
        draw.text((left + 2, 4), name, fill=0)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(Path(args.png), buf.getvalue())
    print(f"wrote {args.png}: {', '.join(names)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=100, help="importance samples K for log p(x)")
    ap.add_argument("--eval-n", type=int, default=200, help="log p(x) on the first N test images")
    ap.add_argument("--match", default="wide", choices=sorted(MATCH), help="how the decoder sizes are matched (see MATCH)")
    ap.add_argument("--out", default="bench/runs/spatial")
    ap.add_argument("--png", default="bench/spatial_samples.png")
    ap.add_argument("--data", default="mnist-small", choices=["mnist-small", "mnist"],
                    help="mnist-small: the first 10,000/2,000 images; mnist: all 60,000/10,000")
    ap.add_argument("--no-train", action="store_true", help="only report the cached runs")
    args = ap.parse_args()
    print(code_header(), flush=True)
    shape = (1, 28, 28)
    ref = count(create("vae", args, shape).model.decoder)
    spatial = count(create("spatial-vae-naive", args, shape).model.decoder)
    print(f"decoder parameters ({args.match}): conv vae {ref:,}, spatial {spatial:,}: "
          f"{100 * (spatial - ref) / ref:+.1f}%", flush=True)
    if abs(spatial - ref) > 0.1 * ref:
        sys.exit(f"--match {args.match} gives {spatial:,} spatial decoder parameters; expected within 10% of {ref:,}")
    rows = []
    if args.no_train:
        for name in args.models:
            for seed in args.seeds:
                p = Path(args.out) / f"{name}-seed{seed}" / f"spatial-{args.data}-e{args.epochs}-K{args.samples}-n{args.eval_n}-{args.match}.json"
                if p.exists():
                    rows.append(json.loads(p.read_text()))
    else:
        train = data.load(args.data, split="train", binarize="dynamic")
        test = data.load(args.data, split="test", binarize="fixed")
        rows = [run_one(name, seed, args, train, test) for seed in args.seeds for name in args.models]
    table(rows, args)
    figure(args)


if __name__ == "__main__":
    main()
