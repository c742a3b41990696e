"""Lower-triangular matrices from vectors, with a backward pass a compiled program can hold."""

import torch

from vaezoo.errors import ShapeError


def vec_to_tril(vec: torch.Tensor, diag: int = 0) -> torch.Tensor:
    """``torch.distributions.utils.vec_to_tril_matrix``: ``vec  # [..., k]`` -> ``[..., n, n]``, the
    entries on and below diagonal ``diag`` (0 or negative) filled in row order.

    Written with integer indices (``torch.tril_indices``) instead of torch's boolean mask: the
    gradient of a boolean-mask assignment is a boolean-mask read, whose output shape depends on the
    mask's values, and inductor cannot compile that into a training step (``TrainingStep``). The
    values, and the gradient, are torch's."""
    if diag > 0:
        raise ShapeError(f"diag={diag}; expected 0 or a negative offset")
    k = vec.shape[-1]
    # the positive root of n^2 + (1 + 2 diag) n - |diag| (diag + 1) - 2 k = 0, as torch solves it
    n = round((-(1 + 2 * diag) + ((1 + 2 * diag) ** 2 + 8 * k + 4 * abs(diag) * (diag + 1)) ** 0.5) / 2)
    rows, cols = torch.tril_indices(n, n, offset=diag, device=vec.device)
    if rows.numel() != k:
        raise ShapeError(f"a last dimension of {k} is not the lower triangle (offset {diag}) of a square matrix")
    mat = vec.new_zeros(vec.shape[:-1] + (n, n))
    mat[..., rows, cols] = vec
    return mat
