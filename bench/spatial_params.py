"""Parameter counts of the spatial VAEs' encoders and decoders and the encoder's output units (the
table of Wang, Yuan & Ji 2017), next to the ``vae`` baseline with conv nets, for MNIST 28x28,
CIFAR 32x32x3 and CelebA 64x64x3 at the default maps; builds the models only, no training.

    python bench/spatial_params.py
"""

import sys
from pathlib import Path

try:
    import vaezoo  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vaezoo import zoo  # noqa: E402
from vaezoo.provenance import code_header  # noqa: E402

SHAPES = [("mnist", (1, 28, 28), "bernoulli"), ("cifar", (3, 32, 32), "normal"), ("celeba", (3, 64, 64), "normal")]
ENTRIES = ["vae", "spatial-vae-naive", "spatial-vae-mvn", "spatial-vae-lowrank", "spatial-vae-mvn-full"]


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def main():
    print(code_header(), flush=True)
    print("| data | entry | latent | encoder outputs | encoder params | decoder params |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for data_name, shape, likelihood in SHAPES:
        for name in ENTRIES:
            overrides = {"net": "conv"} if name == "vae" else {}
            m = zoo.create(name, data_shape=shape, likelihood=likelihood, **overrides)
            x = torch.zeros((1,) + shape)
            outputs = m.guide.encoder(x).shape[-1]
            latent = f"{m.config.latent_dim}" if name == "vae" else "x".join(map(str, m.model.map_shape))
            print(f"| {data_name} {'x'.join(map(str, shape))} | `{name}` | {latent} | {outputs} "
                  f"| {count(m.guide.encoder):,} | {count(m.model.decoder):,} |")


if __name__ == "__main__":
    main()
