"""Pictures for run directories: PNG grids of images (samples, reconstructions)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """``images`` ``[N, C, H, W]`` in [0, 1] (C = 1 or 3) -> a uint8 array ``[H', W']`` or
    ``[H', W', 3]`` with ``nrow`` images per row and white padding."""
    images = images.detach().float().cpu()
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        images = as_tiles(images)
    images = images.clamp(0, 1)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    arr = (grid * 255).round().to(torch.uint8).numpy()
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def as_tiles(x: torch.Tensor) -> torch.Tensor:
    """Data that are not images, ``[N, *event]`` (vectors, sequences), as grey tiles ``[N, 1, h, w]``
    to look at: each datapoint's values row by row in the most nearly square h x w >= their number
    (zeros after them), scaled to [0, 1] by the batch's range."""
    flat = x.reshape(x.shape[0], -1)
    d = flat.shape[1]
    square = max(1, math.isqrt(d))
    # an exact factorization if one is nearly square (w <= 4 h), else the square with padding
    h = next((k for k in range(square, 0, -1) if d % k == 0 and d // k <= 4 * k), square)
    w = math.ceil(d / h)
    lo, hi = float(flat.min()), float(flat.max())
    flat = (flat - lo) / (hi - lo) if hi > lo else torch.zeros_like(flat)
    return torch.nn.functional.pad(flat, (0, h * w - d)).reshape(-1, 1, h, w)


def save_image_grid(images: torch.Tensor, path, nrow: int = 8, scale: int = 2) -> Path:
    """Writes a PNG grid of ``images`` (atomically), upscaled ``scale`` times for legibility."""
    from PIL import Image

    from vaezoo.fileio import atomic_write_bytes

    img = Image.fromarray(image_grid(images, nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def reconstruction_pairs(x: torch.Tensor, recon: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """Interleaves rows of originals and their reconstructions: row 2i originals, row 2i+1
    reconstructions, so each reconstruction sits under its original."""
    n = (x.shape[0] // nrow) * nrow or x.shape[0]
    x, recon = x[:n].cpu(), recon[:n].cpu()
    blocks = []
    for i in range(0, n, nrow):
        blocks += [x[i : i + nrow], recon[i : i + nrow]]
    return torch.cat(blocks)
