"""Trains the small MNIST classifier whose features the sample-quality metric uses
(``vaezoo/evaluation/quality.py``) and writes ``vaezoo/evaluation/mnist_classifier.pt``.

    VAEZOO_DATA_DIR=... OMP_NUM_THREADS=1 python bench/train_mnist_classifier.py

Full MNIST, 3 epochs of Adam (lr 1e-3, batches of 128), seed 0, float32, one thread; prints the
test accuracy. The weights are saved in float32 (about 430 kB)."""

import sys
import time
from pathlib import Path

import torch

from vaezoo import data
from vaezoo.evaluation.quality import WEIGHTS, MNISTClassifier
from vaezoo.provenance import code_header


def main(epochs: int = 3, out: Path = WEIGHTS) -> None:
    print(code_header(), flush=True)
    torch.manual_seed(0)
    train, test = data.load("mnist", split="train"), data.load("mnist", split="test")
    model = MNISTClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train.data, train.targets
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test.data[i:i + 1000]).argmax(-1) == test.targets[i:i + 1000]).sum())
                          for i in range(0, len(test.data), 1000))
        print(f"epoch {epoch}: test accuracy {correct / len(test.data):.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    torch.save({k: v.float().contiguous() for k, v in model.state_dict().items()}, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
