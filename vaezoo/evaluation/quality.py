"""Sample quality offline: the Frechet distance of generated images to real ones in the feature space
of a small MNIST classifier that vaezoo ships (``mnist_classifier.pt``, made by
``bench/train_mnist_classifier.py``), computed by torchmetrics' ``FrechetInceptionDistance``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from vaezoo import traces
from vaezoo.errors import ConfigError, ShapeError

WEIGHTS = Path(__file__).with_name("mnist_classifier.pt")
IMAGE_SHAPE = (1, 28, 28)


class MNISTClassifier(nn.Module):
    """Two 3x3 conv layers (16, 32 channels, each followed by 2x2 max-pooling), a hidden layer of
    ``num_features`` units and 10 logits. :meth:`features` is the hidden layer (after ReLU): the
    space in which samples are compared."""

    num_features = 64

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, 28, 28] in [0, 1] -> [B, 64]
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Features(nn.Module):
    """The classifier's features as torchmetrics' custom ``feature`` module: images ``[B, 1, 28,
    28]`` of any float dtype and device in, float32 features ``[B, num_features]`` out."""

    def __init__(self, classifier: MNISTClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = next(self.classifier.parameters())
        return self.classifier.features(x.to(p.device, p.dtype))


def load_classifier(path: Union[str, Path, None] = None) -> MNISTClassifier:
    """The shipped classifier (or the weights at ``path``), in eval mode, on the CPU."""
    model = MNISTClassifier()
    model.load_state_dict(torch.load(WEIGHTS if path is None else path, map_location="cpu", weights_only=True))
    return model.eval()


def _images(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ShapeError(f"{name} of shape {tuple(x.shape)}; expected MNIST-like images [N, 1, 28, 28]")
    if x.shape[0] < 2:
        raise ShapeError(f"{name} hold {x.shape[0]} image; expected at least 2 for a covariance")
    return x


@torch.no_grad()
def generate(m, n: int, from_likelihood: bool = False, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """``n`` images from the prior of the zoo model ``m``: the means E[x | z] of the observation
    distribution, or draws from it (``from_likelihood``), clamped to [0, 1] as images are shown."""
    p = next(m.parameters())
    out = []
    with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            template = torch.zeros((k,) + tuple(m.data_shape), device=p.device, dtype=p.dtype)
            d = traces.record(m.model, template).sites["x"]["fn"]
            out.append(d.sample() if from_likelihood else d.mean)
    return torch.cat(out).clamp(0, 1)


def frechet_distance(generated, reference: torch.Tensor, *, n: Optional[int] = None, from_likelihood: bool = False,
                     feature: Optional[nn.Module] = None, batch_size: int = 500, seed: int = 0) -> float:
    """The Frechet distance between the Gaussians fitted to the classifier features of
    ``generated`` and of ``reference`` (images ``[N, 1, 28, 28]`` in [0, 1], e.g. the MNIST test set):
    the FID of Heusel et al. (2017) with the shipped MNIST classifier in place of Inception-v3, so
    its values compare between vaezoo models, not with published FIDs.

    ``generated``: images, or a zoo model from whose prior ``n`` images are drawn (default
    ``len(reference)``; means, or samples of the observation distribution if ``from_likelihood``).
    ``feature``: another feature module for torchmetrics (``num_features`` attribute)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    reference = _images(reference, "reference images")
    if isinstance(generated, torch.Tensor):
        generated = _images(generated, "generated images")
    elif hasattr(generated, "model") and hasattr(generated, "data_shape"):
        if tuple(generated.data_shape) != IMAGE_SHAPE:
            raise ShapeError(f"model {generated.name!r} makes data of shape {tuple(generated.data_shape)}; "
                             f"expected {IMAGE_SHAPE} for the MNIST classifier's features")
        generated = generate(generated, len(reference) if n is None else n, from_likelihood, batch_size, seed)
    else:
        raise ConfigError(f"generated of type {type(generated).__name__}; expected images [N, 1, 28, 28] or a zoo model")
    metric = FrechetInceptionDistance(feature=feature or Features(load_classifier()), normalize=True)
    for images, real in ((reference, True), (generated, False)):
        for start in range(0, len(images), batch_size):
            metric.update(images[start:start + batch_size].float().cpu(), real=real)
    return float(metric.compute())


def model_quality(m, reference: torch.Tensor, seed: int = 0) -> dict:
    """``{"means": ..., "samples": ...}``: :func:`frechet_distance` of ``len(reference)`` prior
    draws of the zoo model ``m`` to ``reference``, for the means of the observation distribution
    and for samples from it (the paper's Table 1 for one model)."""
    return {kind: frechet_distance(m, reference, from_likelihood=kind == "samples", seed=seed) for kind in ("means", "samples")}
