"""Spatial transformers (Jaderberg et al. 2015) for the transformer VAEs of
``papers/transformer-vae-pose-latents.txt``: affine maps (6 or 5 degrees of freedom) and thin-plate
splines, warping images ``[..., C, H, W]`` by parameters ``[..., k]`` with leading dimensions broadcast."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from vaezoo.errors import ConfigError

ALIGN_CORNERS = False


def base_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The centres of the pixels of an ``height x width`` image in normalized coordinates
    ``[H * W, 2]`` (x, y), row-major, on the device and of the dtype of ``like``."""
    eye = torch.eye(2, 3, device=like.device, dtype=like.dtype).unsqueeze(0)
    return F.affine_grid(eye, [1, 1, height, width], align_corners=ALIGN_CORNERS).reshape(height * width, 2)


class SpatialTransformer(nn.Module):
    """Base class. Coordinates are torch's normalized ones: x (width) and y (height) in [-1, 1],
    with ``align_corners=False`` throughout, so -1 and 1 are the outer edges of the border pixels
    and a pixel's centre lies at (2 i + 1) / W - 1: the identity map samples every pixel at its own
    centre and is the identity warp. The parameters u define the *sampling map* T_u of
    ``grid_sample``: the warped image at an output location p is the input image at T_u(p).

    ``num_params``: k; ``identity(like)``: the parameters ``[k]`` of the identity map;
    ``transform_points(u, p)``: T_u(p) for ``u  # [..., k]`` and points ``p  # [..., M, 2]``;
    ``inverse_points(u, p)``: T_u^{-1}(p), exact or as the subclass documents; ``forward(image, u)``:
    the warp, output(p) = image(T_u(p)); ``forward(image, u, inverse=True)`` un-warps."""

    num_params: int

    def identity(self, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def transform_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, image: torch.Tensor, params: torch.Tensor, inverse: bool = False, background: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``image  # [..., C, H, W]`` warped by ``params  # [..., k]`` (leading dimensions
        broadcast): ``[*batch, C, H, W]``. Locations sampled outside the image read ``background``
        (a tensor broadcasting to ``[C, 1, 1]``; zero by default), bilinearly interpolated."""
        c, h, w = image.shape[-3:]
        batch = torch.broadcast_shapes(image.shape[:-3], params.shape[:-1])
        points = base_grid(h, w, image)  # [H*W, 2]
        mapping = self.inverse_points if inverse else self.transform_points
        grid = mapping(params.expand(batch + params.shape[-1:]), points)  # [*batch, H*W, 2]
        flat_image = image.expand(batch + (c, h, w)).reshape(-1, c, h, w)
        if background is not None:
            flat_image = flat_image - background
        out = F.grid_sample(
            flat_image, grid.reshape(-1, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS
        )
        if background is not None:
            out = out + background
        return out.reshape(batch + (c, h, w))


def _affine_apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """A p + b for ``matrix = [A | b]  # [..., 2, 3]`` and ``points  # [..., M, 2]``."""
    return points @ matrix[..., :2].transpose(-1, -2) + matrix[..., 2].unsqueeze(-2)


def affine_inverse(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix ``[A^{-1} | -A^{-1} b]  # [..., 2, 3]`` of the inverse of p -> A p + b."""
    a_inv = torch.linalg.inv(matrix[..., :2])
    return torch.cat([a_inv, -(a_inv @ matrix[..., 2:])], dim=-1)


class AffineTransformer(SpatialTransformer):
    """The general affine map T_u(p) = A p + b with the 6 parameters u = (a, b, c, d, e, f) of the
    row-major 2 x 3 matrix [A | b] = [[a, b, c], [d, e, f]]; identity u = (1, 0, 0, 0, 1, 0)."""

    num_params = 6

    def identity(self, like):
        return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=like.device, dtype=like.dtype)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """``[..., 6] -> [..., 2, 3]``."""
        return params.reshape(params.shape[:-1] + (2, 3))

    def transform_points(self, params, points):
        return _affine_apply(self.matrix(params), points)

    def inverse_points(self, params, points):
        return _affine_apply(affine_inverse(self.matrix(params)), points)


class Affine5Transformer(AffineTransformer):
    """The affine map with the paper's 5 interpretable parameters u = (psi, log S_x, log S_y, T_x,
    T_y) (rotation, scales, translation; section V.iii)::

        [A | b] = [[S_x cos psi, -S_x sin psi, S_x T_x],
                   [S_y sin psi,  S_y cos psi, S_y T_y]]

    identity u = 0."""

    num_params = 5

    def identity(self, like):
        return like.new_zeros(5)

    def matrix(self, params):
        psi, log_sx, log_sy, tx, ty = params.unbind(-1)
        sx, sy, cos, sin = log_sx.exp(), log_sy.exp(), psi.cos(), psi.sin()
        rows = [torch.stack([sx * cos, -sx * sin, sx * tx], -1), torch.stack([sy * sin, sy * cos, sy * ty], -1)]
        return torch.stack(rows, -2)


def _tps_kernel(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """phi(|p - c|) = r^2 log r, with phi(0) = 0: ``[..., M, 2], [..., N, 2] -> [..., M, N]``."""
    r2 = (points.unsqueeze(-2) - centres.unsqueeze(-3)).pow(2).sum(-1)
    # r^2 log r = r2 log(r2) / 2; the clamp only keeps log finite where r2 = 0 (there r2 * log = 0)
    return 0.5 * r2 * r2.clamp_min(torch.finfo(r2.dtype).tiny).log()


def _tps_basis(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[phi(|p - c_1|), ..., phi(|p - c_N|), 1, p_x, p_y]: ``[..., M, N + 3]``."""
    kernel = _tps_kernel(points, centres)
    points = points.expand(kernel.shape[:-1] + (2,))
    return torch.cat([kernel, points.new_ones(points.shape[:-1] + (1,)), points], dim=-1)


def _tps_system(centres: torch.Tensor) -> torch.Tensor:
    """The (N + 3) x (N + 3) interpolation system [[K, P], [P^T, 0]] of a TPS through ``centres
    # [..., N, 2]``, K_ij = phi(|c_i - c_j|), P = [1, c]: ``[..., N + 3, N + 3]``."""
    top = _tps_basis(centres, centres)  # [..., N, N+3]
    p = top[..., -3:]
    zeros = centres.new_zeros(centres.shape[:-2] + (3, 3))
    bottom = torch.cat([p.transpose(-1, -2), zeros], dim=-1)
    return torch.cat([top, bottom], dim=-2)


class TPSTransformer(SpatialTransformer):
    """Thin-plate splines on an ``s x s`` grid of control points c_i spanning [-1, 1]^2 (row-major:
    y outer, x inner). The 2 s^2 parameters are the displacements d_i = (dx_i, dy_i) of the control
    points (``u  # [..., s^2 * 2]`` read as ``[..., s^2, 2]``): T_u(p) = p + D(p), with D the thin-plate
    spline (kernel r^2 log r plus an affine part) interpolating D(c_i) = d_i; identity u = 0.

    D is linear in d: D(p) = Q(p) L^{-1} [d; 0] with L the (N + 3) x (N + 3) system of the fixed
    control points, inverted once here and kept as a buffer. Written here rather than taken from a
    library because kornia's ``warp_image_tps`` moves the image under the identity warp with its
    default ``align_corners`` and returns zeros in some versions (and kornia is not a dependency).
    """

    def __init__(self, grid_size: int = 3):
        super().__init__()
        if grid_size < 2:
            raise ConfigError(f"grid_size={grid_size}; expected an integer >= 2")
        self.grid_size = grid_size
        self.num_params = 2 * grid_size**2
        line = torch.linspace(-1.0, 1.0, grid_size, dtype=torch.float64)
        yy, xx = torch.meshgrid(line, line, indexing="ij")
        centres = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # [N, 2]
        # kept in float64 (cast to the points' dtype when used) so that a model built in float32 and
        # moved to float64 does not carry a float32-rounded system; casting the module casts them
        self.register_buffer("centres", centres)
        # the columns of L^{-1} that multiply the data [d; 0]: [N+3, N]
        self.register_buffer("system_inverse", torch.linalg.inv(_tps_system(centres))[:, : centres.shape[0]])

    def identity(self, like):
        return like.new_zeros(self.num_params)

    def displacements(self, params: torch.Tensor) -> torch.Tensor:
        """``[..., 2 N] -> [..., N, 2]``."""
        return params.reshape(params.shape[:-1] + (-1, 2))

    def transform_points(self, params, points):
        centres, inv = self.centres.to(points), self.system_inverse.to(points)
        weights = _tps_basis(points, centres) @ inv  # [..., M, N]: D(p) = weights @ d
        return points + weights @ self.displacements(params)

    def inverse_points(self, params, points):
        """The thin-plate spline through the displaced control points c_i + d_i that maps them
        back to c_i: T_u^{-1} exactly at the control points, an approximation between them (the
        inverse of a TPS is not a TPS). Its system depends on u, so it is solved per call."""
        d = self.displacements(params)  # [..., N, 2]
        moved = self.centres.to(d) + d
        rhs = torch.cat([-d, d.new_zeros(d.shape[:-2] + (3, 2))], dim=-2)  # [..., N+3, 2]
        coefficients = torch.linalg.solve(_tps_system(moved), rhs)
        return points + _tps_basis(points, moved) @ coefficients


TRANSFORMERS = {"affine": AffineTransformer, "affine5": Affine5Transformer, "tps": TPSTransformer}


def make_transformer(kind: str, grid_size: int = 3) -> SpatialTransformer:
    """``affine`` (6 parameters), ``affine5`` (the paper's 5) or ``tps`` (``2 grid_size^2``)."""
    return TPSTransformer(grid_size) if kind == "tps" else TRANSFORMERS[kind]()
