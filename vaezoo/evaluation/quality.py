"""Sample quality offline: the Frechet distance of generated images to real ones in the feature space
of a small MNIST classifier that vaezoo ships (``mnist_classifier.pt``, made by
``bench/train_mnist_classifier.py``), or of Inception-v3 for a user who has its weights, both computed
by torchmetrics' ``FrechetInceptionDistance``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from vaezoo import traces
from vaezoo.errors import CheckpointError, ConfigError, DataError, MissingDependencyError, ShapeError
from vaezoo.randomness import rng_scope

WEIGHTS = Path(__file__).with_name("mnist_classifier.pt")
IMAGE_SHAPE = (1, 28, 28)
FEATURES = ("mnist", "inception")
# torch-fidelity's conversion of the TensorFlow FID network (pt_inception-2015-12-05), the weights
# torchmetrics would download itself
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = 2048


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


def _images(x: torch.Tensor, name: str, features: str = "mnist") -> torch.Tensor:
    if features == "mnist" and (x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE):
        raise ShapeError(f"{name} of shape {tuple(x.shape)}; expected MNIST-like images [N, 1, 28, 28]")
    if features == "inception" and (x.dim() != 4 or x.shape[1] not in (1, 3)):
        raise ShapeError(f"{name} of shape {tuple(x.shape)}; expected grey or colour images [N, 1 or 3, H, W]")
    if x.shape[0] < 2:
        raise ShapeError(f"{name} hold {x.shape[0]} image; expected at least 2 for a covariance")
    return x


@torch.no_grad()
def generate(m, n: int, from_likelihood: bool = False, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """``n`` images from the prior of the zoo model ``m``: the means E[x | z] of the observation
    distribution, or draws from it (``from_likelihood``), clamped to [0, 1] as images are shown."""
    p = next(m.parameters())
    out = []
    with rng_scope(p.device):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            template = torch.zeros((k,) + tuple(m.data_shape), device=p.device, dtype=p.dtype)
            d = traces.record(m.model, template).sites["x"]["fn"]
            out.append(d.sample() if from_likelihood else d.mean)
    return torch.cat(out).clamp(0, 1)


def check_model(m, features: str = "mnist") -> None:
    """Refuses a zoo model whose data the feature space cannot read (cheap: call it before any
    expensive pass): MNIST's classifier reads (1, 28, 28) images, Inception (1 or 3, H, W) ones."""
    shape = tuple(m.data_shape)
    if features == "mnist" and shape != IMAGE_SHAPE:
        raise ShapeError(f"model {m.name!r} makes data of shape {shape}; "
                         f"expected {IMAGE_SHAPE} for the MNIST classifier's features")
    if features == "inception" and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise ShapeError(f"model {m.name!r} makes data of shape {shape}; "
                         f"expected images (1 or 3, H, W) for Inception features")


def _check_features(features: str, weights, feature) -> None:
    if not isinstance(features, str) or features not in FEATURES:
        raise ConfigError(f"features={features!r}; expected one of {', '.join(map(repr, FEATURES))}")
    if features == "inception" and feature is not None:
        raise ConfigError("a feature module with features='inception'; expected one of the two")
    if features == "inception" and weights is None:
        raise ConfigError(f"features='inception' needs the Inception-v3 weights file; expected weights=PATH "
                          f"(download it from {INCEPTION_URL})")
    if features == "mnist" and weights is not None and not Path(weights).expanduser().is_file():
        raise DataError(f"no classifier weights at {weights}; expected a state dict of MNISTClassifier")


def _inception_metric(weights: Union[str, Path]):
    """torchmetrics' FID on Inception-v3's 2048 pool features, with the network read from ``weights``."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"no Inception weights at {path}; expected the file {INCEPTION_URL} "
                        f"(pass its path as weights=, or --inception-weights in the CLI)")
    # torch-fidelity unpickles the file in full (weights_only=False): a safe load first refuses a file
    # that is not a plain state dict, and a look at the classifier names a wrong network in one line
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, refused pickles: all mean "not the weights"
        raise CheckpointError(f"Inception weights {path} are corrupt or not a state dict ({type(e).__name__}); "
                              f"expected the file {INCEPTION_URL}") from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (1008, 2048):
        raise CheckpointError(f"{path} holds no Inception-v3 FID network (no 'fc.weight' of shape [1008, 2048]); "
                              f"expected the file {INCEPTION_URL}")
    try:
        import torch_fidelity  # noqa: F401  torchmetrics' Inception network lives there
    except ImportError:
        raise MissingDependencyError("features='inception' needs torch-fidelity; expected it installed "
                                     "(pip install vaezoo[fid])") from None
    from torchmetrics.image.fid import FrechetInceptionDistance

    # antialias=False: torch-fidelity's TensorFlow-compatible bilinear resize to 299x299, the one of
    # the original FID code, so that values compare with published FIDs (torchmetrics' default
    # antialiased resize shifts them)
    return FrechetInceptionDistance(feature=INCEPTION_FEATURES, normalize=True, antialias=False,
                                    feature_extractor_weights_path=str(path))


def frechet_distance(generated, reference: torch.Tensor, *, n: Optional[int] = None, from_likelihood: bool = False,
                     features: str = "mnist", weights: Union[str, Path, None] = None,
                     feature: Optional[nn.Module] = None, batch_size: int = 500, seed: int = 0) -> float:
    """The Frechet distance between the Gaussians fitted to the features of ``generated`` and of
    ``reference`` (images ``[N, C, H, W]`` in [0, 1], e.g. the test set): the FID of Heusel et al. (2017).

    ``features="mnist"`` (default): the features of the shipped MNIST classifier (or of the
    :class:`MNISTClassifier` state dict at ``weights``) on images ``[N, 1, 28, 28]``, so values compare between
    vaezoo models, not with published FIDs. ``features="inception"``: Inception-v3's 2048 pool
    features through torch-fidelity (``pip install vaezoo[fid]``), read from the weights file
    ``weights`` (required: :data:`INCEPTION_URL`, never downloaded); grey images ``[N, 1, H, W]``
    are repeated to three channels, and every image is quantized to 8 bits and resized to 299x299
    by torchmetrics as the original FID code does.

    ``generated``: images, or a zoo model from whose prior ``n`` images are drawn (default
    ``len(reference)``; means, or samples of the observation distribution if ``from_likelihood``).
    ``feature``: another feature module for torchmetrics (``num_features`` attribute) in place of
    the MNIST classifier."""
    _check_features(features, weights, feature)
    reference = _images(reference, "reference images", features)
    if isinstance(generated, torch.Tensor):
        generated = _images(generated, "generated images", features)
    elif hasattr(generated, "model") and hasattr(generated, "data_shape"):
        check_model(generated, features)
    else:
        raise ConfigError(f"generated of type {type(generated).__name__}; expected images [N, C, H, W] or a zoo model")
    # the metric before the samples, so that a wrong weights file is refused before minutes of sampling
    if features == "inception":
        metric = _inception_metric(weights)
    else:
        from torchmetrics.image.fid import FrechetInceptionDistance

        if feature is None:
            feature = Features(load_classifier(None if weights is None else Path(weights).expanduser()))
        metric = FrechetInceptionDistance(feature=feature, normalize=True)
    if not isinstance(generated, torch.Tensor):
        generated = generate(generated, len(reference) if n is None else n, from_likelihood, batch_size, seed)
    for images, real in ((reference, True), (generated, False)):
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size].float().cpu()
            metric.update(chunk.expand(-1, 3, -1, -1) if features == "inception" else chunk, real=real)
    return float(metric.compute())


def model_quality(m, reference: torch.Tensor, seed: int = 0, features: str = "mnist",
                  weights: Union[str, Path, None] = None) -> dict:
    """``{"means": ..., "samples": ...}``: :func:`frechet_distance` of ``len(reference)`` prior
    draws of the zoo model ``m`` to ``reference``, for the means of the observation distribution
    and for samples from it (the paper's Table 1 for one model), in the ``features`` read from
    ``weights`` (see :func:`frechet_distance`)."""
    return {kind: frechet_distance(m, reference, from_likelihood=kind == "samples", seed=seed, features=features,
                                   weights=weights)
            for kind in ("means", "samples")}
