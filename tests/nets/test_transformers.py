"""Spatial transformers against hand-computed maps: identity warps, the paper's 5-parameter affine
matrix, one-pixel shifts and quarter turns as exact pixel permutations, thin-plate splines against
their interpolation and affine-reproduction properties and scipy's thin-plate RBF, and inverses."""

import math

import pytest
import torch

from vaezoo.nets.transformers import (
    Affine5Transformer,
    AffineTransformer,
    TPSTransformer,
    affine_inverse,
    base_grid,
)

F64 = torch.float64
TRANSFORMERS = [
    pytest.param(AffineTransformer, id="affine"),
    pytest.param(Affine5Transformer, id="affine5"),
    pytest.param(TPSTransformer, id="tps"),
]


def rand(*shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("cls", TRANSFORMERS)
def test_identity_parameters_give_the_identity_warp(cls):
    t = cls().double()
    image = rand(2, 3, 7, 9)  # [B, C, H, W], not square
    u = t.identity(image).expand(4, 2, t.num_params)  # particle dimension in front
    for inverse in (False, True):
        out = t(image, u, inverse=inverse)
        assert out.shape == (4, 2, 3, 7, 9) and out.dtype == F64
        torch.testing.assert_close(out, image.expand_as(out), rtol=0, atol=1e-6)


def test_parameter_counts():
    assert AffineTransformer().num_params == 6 and Affine5Transformer().num_params == 5
    assert TPSTransformer().num_params == 18 and TPSTransformer(4).num_params == 32


def test_affine5_is_the_papers_matrix():
    """[[S_x cos psi, -S_x sin psi, S_x T_x], [S_y sin psi, S_y cos psi, S_y T_y]] for u = (psi,
    log S_x, log S_y, T_x, T_y), worked by hand at psi = pi/6, S_x = 2, S_y = 1/2."""
    u = torch.tensor([math.pi / 6, math.log(2.0), math.log(0.5), 0.3, -0.4], dtype=F64)
    c, s = math.sqrt(3) / 2, 0.5
    expected = torch.tensor([[2 * c, -2 * s, 0.6], [0.5 * s, 0.5 * c, -0.2]], dtype=F64)
    torch.testing.assert_close(Affine5Transformer().matrix(u), expected)
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, -1.0]], dtype=F64)
    by_hand = torch.tensor(
        [[0.6, -0.2], [2 * c + 0.6, 0.25 - 0.2], [-1.0 + 0.6, 0.5 * c - 0.2], [c + 1 + 0.6, 0.125 - 0.5 * c - 0.2]],
        dtype=F64,
    )
    torch.testing.assert_close(Affine5Transformer().transform_points(u, points), by_hand)
    # the 6-parameter map reads u as the row-major 2 x 3 matrix
    u6 = torch.arange(1.0, 7.0, dtype=F64)
    torch.testing.assert_close(AffineTransformer().transform_points(u6, points[1:2]), torch.tensor([[1.0 + 3, 4.0 + 6]], dtype=F64))


def test_one_pixel_shift_and_quarter_turn_are_exact_pixel_permutations():
    """With align_corners=False a pixel is 2 / W wide: T(p) = p + (2 / W, 0) reads every pixel from
    its right neighbour (the last column from outside: zero), and a quarter turn T(x, y) = (-y, x)
    of a square image maps pixel centres onto pixel centres: out[r, c] = image[c, W - 1 - r]."""
    image = rand(1, 2, 6, 6)
    shift = torch.tensor([0.0, 0.0, 0.0, 2.0 / 6, 0.0], dtype=F64)
    out = Affine5Transformer()(image, shift)
    torch.testing.assert_close(out[..., :-1], image[..., 1:], rtol=0, atol=1e-12)
    assert out[..., -1].abs().max() < 1e-12
    turn = torch.tensor([math.pi / 2, 0.0, 0.0, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(Affine5Transformer()(image, turn), image.transpose(-1, -2).flip(-2), rtol=0, atol=1e-12)
    # the background fills what comes from outside
    out = Affine5Transformer()(image, shift, background=torch.tensor([[[0.25]], [[-1.0]]], dtype=F64))
    torch.testing.assert_close(out[0, :, :, -1], torch.tensor([[0.25] * 6, [-1.0] * 6], dtype=F64))


def test_broadcasting_over_particles_equals_one_warp_at_a_time():
    t = Affine5Transformer()
    image = rand(3, 1, 5, 5)
    u = 0.2 * randn(4, 3, 5)  # [K, B, k]
    out = t(image, u)
    assert out.shape == (4, 3, 1, 5, 5)
    torch.testing.assert_close(out[2, 1], t(image[1], u[2, 1]))


@pytest.mark.parametrize("cls", [AffineTransformer, Affine5Transformer])
def test_affine_inverse_is_a_inverse_x_minus_a_inverse_b(cls):
    t = cls()
    u = t.identity(torch.zeros((), dtype=F64)) + 0.3 * randn(2, t.num_params, seed=1)
    matrix = t.matrix(u)
    inv = affine_inverse(matrix)
    a, b = matrix[..., :2], matrix[..., 2]
    torch.testing.assert_close(inv[..., :2] @ a, torch.eye(2, dtype=F64).expand(2, 2, 2))
    torch.testing.assert_close(inv[..., 2], -(torch.linalg.inv(a) @ b.unsqueeze(-1)).squeeze(-1))
    points = randn(2, 10, 2, seed=2)
    torch.testing.assert_close(t.inverse_points(u, t.transform_points(u, points)), points)


@pytest.mark.parametrize("cls", [AffineTransformer, Affine5Transformer])
def test_affine_unwarp_after_warp_is_the_identity_on_a_smooth_image_away_from_borders(cls):
    t = cls()
    size = 48
    grid = base_grid(size, size, torch.zeros((), dtype=F64)).reshape(size, size, 2)
    image = (torch.sin(2.0 * grid[..., 0]) * torch.cos(1.5 * grid[..., 1]) + grid[..., 0] ** 2).expand(1, 1, size, size)
    if cls is Affine5Transformer:
        u = torch.tensor([0.3, 0.1, -0.15, 0.05, -0.1], dtype=F64)
    else:
        u = torch.tensor([0.95, -0.2, 0.05, 0.15, 1.05, -0.1], dtype=F64)
    back = t(t(image, u), u, inverse=True)
    inner = grid.abs().amax(-1) < 0.5  # points whose round trip stays inside the image
    error = (back - image)[0, 0][inner].abs().max()
    assert error < 5e-3, error  # bilinear interpolation, twice, of a smooth image
    # the wrong inverse (A^{-1} x - b) is far off
    wrong = torch.cat([torch.linalg.inv(t.matrix(u)[:, :2]), -t.matrix(u)[:, 2:]], -1).reshape(6)
    far = AffineTransformer()(t(image, u), wrong)
    assert (far - image)[0, 0][inner].abs().max() > 5 * error


def test_tps_interpolates_the_control_point_displacements():
    t = TPSTransformer(3)
    d = 0.1 * randn(2, 18)
    centres = t.centres.to(F64)
    assert centres.shape == (9, 2) and torch.equal(centres[1], torch.tensor([0.0, -1.0], dtype=F64))  # row-major
    torch.testing.assert_close(t.transform_points(d, centres), centres + d.reshape(2, 9, 2))


def test_tps_reproduces_affine_displacements():
    """A TPS has an affine part and a kernel part orthogonal to affine functions: displacements
    d_i = M c_i + t of the control points give the displacement field M p + t everywhere."""
    t = TPSTransformer(4)
    m, shift = torch.tensor([[0.1, -0.2], [0.05, 0.15]], dtype=F64), torch.tensor([0.3, -0.1], dtype=F64)
    d = t.centres.to(F64) @ m.T + shift
    points = 2 * rand(50, 2) - 1
    torch.testing.assert_close(t.transform_points(d.reshape(-1), points), points + points @ m.T + shift)


def test_tps_against_scipys_thin_plate_rbf():
    interpolate = pytest.importorskip("scipy.interpolate")
    t = TPSTransformer(3)
    d = 0.2 * randn(18, seed=3)
    points = 2 * rand(40, 2, seed=4) - 1
    rbf = interpolate.RBFInterpolator(t.centres.double().numpy(), d.reshape(9, 2).numpy(), kernel="thin_plate_spline", degree=1)
    expected = points + torch.from_numpy(rbf(points.numpy()))
    torch.testing.assert_close(t.transform_points(d, points), expected)


def test_tps_inverse_maps_the_moved_control_points_back_and_undoes_a_small_warp():
    t = TPSTransformer(3)
    d = 0.08 * randn(3, 18, seed=5)
    centres = t.centres.to(F64)
    moved = centres + d.reshape(3, 9, 2)
    torch.testing.assert_close(t.inverse_points(d, moved), centres.expand(3, 9, 2))
    points = 1.6 * rand(3, 30, 2, seed=6) - 0.8
    round_trip = t.inverse_points(d, t.transform_points(d, points))
    assert (round_trip - points).abs().max() < 0.1 * d.abs().max()  # approximate between control points


def test_dtype_and_device_follow_the_input():
    for t in (AffineTransformer(), TPSTransformer()):
        image = torch.rand(2, 1, 4, 4, dtype=torch.float32)
        out = t(image, t.identity(image))
        assert out.dtype == torch.float32 and out.device == image.device
