import math

import numpy as np
import pytest
import torch

from channels.metrics import (
    entropy_effective_rank,
    numerical_rank,
    participation_ratio,
    power_law_slope,
    spectrum_metrics,
    stable_rank,
    top_share,
)
from lth.errors import LTCError

KEYS = [
    "effective_rank",
    "participation_ratio",
    "stable_rank",
    "numerical_rank",
    "top1_share",
    "topk_share",
    "tail_slope",
    "sigma_max",
    "frobenius_sq",
]


def test_flat_spectrum_has_full_rank_on_every_measure():
    flat = np.full(12, 2.5)
    assert entropy_effective_rank(flat) == pytest.approx(12, rel=1e-12)
    assert participation_ratio(flat) == pytest.approx(12, rel=1e-12)
    assert stable_rank(flat) == pytest.approx(12, rel=1e-12)
    assert numerical_rank(flat) == 12
    assert top_share(flat, 3) == pytest.approx(0.25)
    assert power_law_slope(flat) == pytest.approx(0.0, abs=1e-12)


def test_rank_one_spectrum_has_one_channel():
    single = np.array([0.0, 4.0, 0.0, 0.0, 0.0])
    assert entropy_effective_rank(single) == pytest.approx(1.0)
    assert participation_ratio(single) == pytest.approx(1.0)
    assert stable_rank(single) == pytest.approx(1.0)
    assert numerical_rank(single) == 1
    assert top_share(single, 1) == pytest.approx(1.0)


def test_three_element_spectrum_by_hand():
    eigs = np.array([1.0, 3.0, 2.0])  # any order; p = (1/2, 1/3, 1/6) once sorted
    entropy = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    assert entropy_effective_rank(eigs) == pytest.approx(math.exp(entropy), rel=1e-12)
    assert participation_ratio(eigs) == pytest.approx(36 / 14, rel=1e-12)
    assert stable_rank(eigs) == pytest.approx(2.0, rel=1e-12)
    assert top_share(eigs, 1) == pytest.approx(0.5)
    assert top_share(eigs, 2) == pytest.approx(5 / 6)
    assert top_share(eigs, 10) == pytest.approx(1.0)
    assert numerical_rank(eigs, rtol=0.4) == 2  # 3 and 2 exceed 1.2; 1 does not
    # Ranks 2..3 carry 2, 1: slope of log lambda on log i is log(1/2) / log(3/2).
    assert power_law_slope(eigs, first=2, last=3) == pytest.approx(math.log(2) / math.log(1.5))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_exact_power_law_recovers_its_exponent(alpha):
    eigs = np.arange(1, 201, dtype=float) ** -alpha
    assert power_law_slope(eigs, rtol=0.0) == pytest.approx(alpha, rel=1e-10)
    # A bigger top eigenvalue (outlier) does not move the default fit, which starts at rank 2.
    eigs[0] = 50.0
    assert power_law_slope(eigs, rtol=0.0) == pytest.approx(alpha, rel=1e-10)


def test_power_law_fit_ignores_the_noise_floor_and_degenerates_to_zero():
    # Default range is ranks 2..50; ranks 31..50 sit on a floor below rtol and are left out.
    eigs = np.concatenate([np.arange(1, 31, dtype=float) ** -1.0, np.full(70, 1e-9)])
    assert power_law_slope(eigs) == pytest.approx(1.0, rel=1e-10)
    assert power_law_slope(np.array([1.0, 0.0, 0.0, 0.0])) == 0.0


def test_numerical_rank_counts_above_relative_tolerance():
    eigs = np.array([10.0, 1.0, 5e-2, 1e-5, 1e-9])
    assert numerical_rank(eigs, rtol=0.5) == 1
    assert numerical_rank(eigs, rtol=1e-3) == 3
    assert numerical_rank(eigs, rtol=1e-7) == 4
    assert numerical_rank(eigs, rtol=0.0) == 5


def test_round_off_negatives_are_clipped_and_torch_input_accepted():
    noisy = torch.tensor([3.0, 2.0, 1.0, -1e-15, -3e-16], dtype=torch.float64)
    clean = np.array([3.0, 2.0, 1.0, 0.0, 0.0])
    assert spectrum_metrics(noisy, k=2) == pytest.approx(spectrum_metrics(clean, k=2))
    assert spectrum_metrics(noisy.float(), k=2)["stable_rank"] == pytest.approx(2.0)


def test_all_zero_spectrum_gives_zeros_not_nan():
    metrics = spectrum_metrics(np.zeros(6), k=3)
    assert list(metrics) == KEYS
    assert all(value == 0.0 for value in metrics.values())


def test_spectrum_metrics_keys_and_values():
    eigs = np.array([4.0, 2.0, 1.0, 1.0])
    metrics = spectrum_metrics(eigs, k=2)
    assert list(metrics) == KEYS
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["stable_rank"] == pytest.approx(2.0)
    assert metrics["top1_share"] == pytest.approx(0.5)
    assert metrics["topk_share"] == pytest.approx(0.75)
    assert metrics["participation_ratio"] == pytest.approx(64 / 22)


@pytest.mark.parametrize("bad", [np.array([]), np.ones((2, 2)), np.array([1.0, np.nan])])
def test_bad_spectra_raise(bad):
    with pytest.raises(LTCError):
        spectrum_metrics(bad)


def test_top_share_needs_positive_k():
    with pytest.raises(LTCError, match="k >= 1"):
        top_share(np.ones(3), 0)


def test_registry_documents_every_metric_and_fills_the_table():
    from channels.metrics import METRIC_NAMES, METRICS, metric_table

    assert list(METRIC_NAMES) == KEYS and all(fn.__doc__ for fn in METRICS.values())
    table = metric_table(np.array([[4.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), k=2)
    assert table.shape == (2, len(KEYS))
    assert table[0, KEYS.index("sigma_max")] == pytest.approx(2.0)
    assert table[1, KEYS.index("frobenius_sq")] == pytest.approx(4.0)
