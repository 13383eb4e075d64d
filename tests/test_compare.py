import math

import numpy as np
import pytest
import scipy.linalg
import torch

from channels.compare import linear_cka, principal_angles, subspace_overlap
from lth.errors import LTCError


def random_basis(d: int, k: int, seed: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, k)))[0]


def test_identical_subspaces_in_a_different_basis_overlap_fully():
    a = random_basis(20, 4, seed=0)
    mixed = a @ np.random.default_rng(1).standard_normal((4, 4))  # same span, not orthonormal
    assert subspace_overlap(a, mixed) == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(principal_angles(a, mixed), 0.0, atol=1e-6)


def test_orthogonal_subspaces_have_zero_overlap():
    eye = np.eye(10)
    assert subspace_overlap(eye[:, :3], eye[:, 3:7]) == pytest.approx(0.0, abs=1e-15)
    assert np.allclose(principal_angles(eye[:, :3], eye[:, 3:7]), math.pi / 2)


def test_known_angle_gives_squared_cosine():
    theta = 0.3
    e = np.eye(5)
    a = e[:, :2]
    b = np.stack([e[:, 0], math.cos(theta) * e[:, 1] + math.sin(theta) * e[:, 2]], axis=1)
    assert np.allclose(principal_angles(a, b), [0.0, theta], atol=1e-7)
    assert subspace_overlap(a, b) == pytest.approx((1 + math.cos(theta) ** 2) / 2, rel=1e-12)


def test_principal_angles_match_scipy():
    a = np.random.default_rng(2).standard_normal((30, 5))
    b = np.random.default_rng(3).standard_normal((30, 7))
    ours = principal_angles(torch.from_numpy(a), b)  # torch and numpy inputs both accepted
    assert ours.shape == (5,)
    assert np.allclose(np.sort(ours), np.sort(scipy.linalg.subspace_angles(a, b)), atol=1e-10)
    assert subspace_overlap(a, b) == pytest.approx(
        np.mean(np.cos(scipy.linalg.subspace_angles(a, b)) ** 2), rel=1e-10
    )


def test_random_subspaces_overlap_near_chance():
    d, k = 200, 10
    overlaps = [
        subspace_overlap(random_basis(d, k, 2 * s), random_basis(d, k, 2 * s + 1))
        for s in range(20)
    ]
    assert np.mean(overlaps) == pytest.approx(k / d, rel=0.2)


def test_cka_invariant_to_rotation_and_isotropic_scale():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) + 5.0
    rotation = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert linear_cka(x, 3.7 * x @ rotation - 2.0) == pytest.approx(1.0, rel=1e-10)


def test_cka_of_independent_noise_is_small():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((2000, 10)), rng.standard_normal((2000, 10))
    assert linear_cka(x, y) < 0.02


def test_cka_is_not_invariant_to_anisotropic_scale():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 4))
    assert linear_cka(x, x * np.array([10.0, 1.0, 1.0, 1.0])) < 0.9


def test_cka_by_hand_and_constant_side():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = x[:, :1]  # keeps one of two equal-variance directions
    # X^T X = diag(2, 2), Y^T Y = [2], Y^T X = [2, 0]: CKA = 4 / (2 sqrt(2) * 2) = 1 / sqrt(2).
    assert linear_cka(x, y) == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert linear_cka(x, np.ones((4, 3))) == 0.0
    with pytest.raises(LTCError, match="same rows"):
        linear_cka(x, np.ones((5, 2)))
