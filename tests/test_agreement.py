"""Comparisons that can fail: matrix agreement with a rotation null, the whitened Gram, and a planted
network whose next layer ignores the direction of highest variance."""
import numpy as np
import pytest
import torch
from torch import nn

from channels.agreement import jacobian_vs_covariance, matrix_agreement, reading, whitened_gram
from channels.covariance import StreamingCovariance
from channels.jacobian import expected_gram, site_jacobian
from experiments.report.jacobian_summary import summary_lines
from lth.errors import LTCError


def random_psd(d: int, seed: int, decay: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (q * np.arange(1, d + 1) ** -decay) @ q.T


def test_matrix_agreement_numbers_match_numpy():
    m, p = random_psd(10, 0), random_psd(10, 1)
    got = matrix_agreement(m, p, k=3, n_null=64, seed=0)
    assert got["relative_frobenius"] == pytest.approx(np.linalg.norm(p - m) / np.linalg.norm(m))
    cos = np.sum(m * p) / np.linalg.norm(m) / np.linalg.norm(p)
    assert got["matrix_cosine"] == pytest.approx(cos)
    scales = np.linspace(0, 3, 3001)
    best = min(np.linalg.norm(c * p - m) for c in scales) / np.linalg.norm(m)
    assert got["relative_frobenius_scaled"] == pytest.approx(best, abs=1e-3)
    # the rotation null's mean is tr(M) tr(P) / (d ||M|| ||P||) (E[R_ij^2] = 1/d)
    null_mean = np.trace(m) * np.trace(p) / (10 * np.linalg.norm(m) * np.linalg.norm(p))
    assert got["matrix_cosine_null_mean"] == pytest.approx(null_mean, rel=0.05)
    assert got["topk_overlap_chance"] == pytest.approx(0.3)


def test_same_matrix_agrees_and_a_rotated_one_does_not():
    m = random_psd(12, 2, decay=2.0)
    same = matrix_agreement(m, 3.0 * m, k=3)
    assert same["relative_frobenius_scaled"] == pytest.approx(0.0, abs=1e-7)
    assert same["topk_overlap"] == pytest.approx(1.0) and reading(same) == "agree"
    assert same["spectrum_tv"] == pytest.approx(0.0, abs=1e-12)
    q = np.linalg.qr(np.random.default_rng(3).standard_normal((12, 12)))[0]
    rotated = matrix_agreement(m, q @ m @ q.T, k=3)
    assert rotated["spectrum_tv"] == pytest.approx(0.0, abs=1e-9)  # same spectrum ...
    assert reading(rotated) == "disagree"  # ... other directions: the null catches it
    with pytest.raises(LTCError, match="different widths"):
        matrix_agreement(m, m[:5, :5], k=2)


def test_planted_high_variance_direction_the_next_layer_ignores():
    """a has most variance along e_0; b = W a with W e_0 = 0. Sensitivity and whitened Gram
    disagree with Cov(a); first-order propagation W Cov(a) W^T predicts the measured Cov(b)."""
    torch.manual_seed(0)
    d = 8
    scales = torch.tensor([10.0] + [1.0] * (d - 1), dtype=torch.float64)
    a = torch.randn(4000, d, dtype=torch.float64) * scales
    layer = nn.Linear(d, d, bias=False).double().eval()
    with torch.no_grad():
        layer.weight[:, 0] = 0.0
    wrapped = nn.Sequential(nn.Identity(), layer)
    cov_a = StreamingCovariance(d)
    cov_a.update(a)
    cov_b = StreamingCovariance(d)
    cov_b.update(layer(a).detach())
    gram = expected_gram(site_jacobian(wrapped, a[:16], "0", "1"))
    np.testing.assert_allclose(gram.numpy(), (layer.weight.T @ layer.weight).detach().numpy(), atol=1e-12)
    result = jacobian_vs_covariance(gram, cov_a.covariance(), k=1)
    assert result["whitened/agrees"] == 0.0 and result["whitened/topk_overlap"] < 0.01
    assert result["sensitivity/agrees"] == 0.0
    propagated = layer.weight @ cov_a.covariance() @ layer.weight.T
    prop = matrix_agreement(cov_b.covariance(), propagated.detach(), k=2)
    assert reading(prop) == "agree" and prop["relative_frobenius"] < 1e-10
    summary = {"pairs": {"0->1": {"items": 1, "blocks": 1, "method": "exact", "causal": True, "founding": {},
                                  "distance_bins": [], "gram": {}, "jacobian_vs_covariance": {"in/all": {"site": "0", **result}},
                                  "propagation": {"all": {"site": "1", **prop}}}}, "covariance": {}}
    lines = "\n".join(summary_lines(summary))
    assert "whitened Gram vs Cov(0): disagree" in lines and "Cov(1) vs propagated from s <= t: agree" in lines


def test_whitened_gram_by_hand():
    c, g = random_psd(5, 4), random_psd(5, 5)
    w, v = np.linalg.eigh(c)
    root = v @ np.diag(np.sqrt(w)) @ v.T
    np.testing.assert_allclose(whitened_gram(g, c), root @ g @ root, atol=1e-12)
    assert np.trace(whitened_gram(g, c)) == pytest.approx(np.trace(g @ c))
