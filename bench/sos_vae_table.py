"""The SOS-VAE paper's Table 1 at a small budget on mnist-small: the Frechet distance (features of
vaezoo's MNIST classifier, see ``vaezoo/evaluation/quality.py``) of the means and of the samples of
``beta-vae-gaussian`` and ``sos-vae`` to the 2000 test images. Both models: conv nets, the same
epochs, batch size, learning rate and seed, their configs' default targets. Prints one table.

    OMP_NUM_THREADS=1 python bench/sos_vae_table.py [EPOCHS] [SEED] [DATA]

DATA: ``mnist-small`` (the default: 10,000 / 2,000 images) or ``mnist`` (60,000 / 10,000).
"""

import sys
import time

import torch

from vaezoo import data, zoo
from vaezoo.evaluation.quality import frechet_distance
from vaezoo.inference import Trainer
from vaezoo.provenance import code_header


def main(epochs: int = 5, seed: int = 0, dataset: str = "mnist-small") -> None:
    torch.set_num_threads(1)
    train = data.load(dataset, split="train")
    test = data.load(dataset, split="test").data
    print(code_header(), flush=True)
    print(f"{dataset}, {epochs} epochs, batch 64, Adam lr 1e-3, seed {seed}, float32, 1 thread")
    print("| model | test ELBO | KL | entropy | FID means | FID samples | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    traces = {}
    for name in ("beta-vae-gaussian", "sos-vae"):
        m = zoo.create(name, data_shape=(1, 28, 28), net="conv")
        start = time.perf_counter()
        history = Trainer(m.objective(), epochs=epochs, batch_size=64, lr=1e-3, device="cpu", seed=seed,
                          progress=False).fit(train, test)
        seconds = time.perf_counter() - start
        last = history[-1]
        traces[name] = [
            f"{r['epoch']}: KL {r['test_kl']:.1f} H {r['test_entropy']:.1f} "
            + " ".join(f"{k[5:]} {v:.2f}" for k, v in r.items() if k.startswith("test_lambda"))
            for r in history
        ]
        means = frechet_distance(m, test, seed=seed)
        samples = frechet_distance(m, test, from_likelihood=True, seed=seed)
        print(f"| {name} | {last['test_elbo']:.1f} | {last['test_kl']:.1f} | {last['test_entropy']:.1f} | "
              f"{means:.2f} | {samples:.2f} | {seconds:.0f} |", flush=True)
    real = data.load(dataset, split="train").data[: len(test)]
    print(f"reference: {len(test)} training images against the test images: {frechet_distance(real, test):.2f}")
    for name, lines in traces.items():
        print(f"{name} per epoch: " + "; ".join(lines))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:4])
