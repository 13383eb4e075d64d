"""Linear mode connectivity: interpolation and the error barrier against hand-computed cases."""
import pytest
import torch
from torch import nn

from lth.connectivity import error_barrier, interpolate_state_dicts
from lth.errors import LTCError


class Scalar(nn.Module):
    """One parameter w; logits (0.2, w^2 x): class 1 wins exactly when w^2 > 0.2 (for x = 1)."""

    def __init__(self, w: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return torch.stack([torch.full_like(x, 0.2), self.w**2 * x], dim=1)


def small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def classification_error(x, y):
    @torch.no_grad()
    def evaluate(model):
        model.eval()
        return (model(x).argmax(1) != y).float().mean().item()
    return evaluate


def test_interpolation_is_the_convex_combination_and_keeps_integer_buffers():
    torch.manual_seed(0)
    a, b = small_bn_net(), small_bn_net()
    a[1].num_batches_tracked.fill_(7)
    b[1].num_batches_tracked.fill_(99)
    b[1].running_mean.normal_()
    sd_a, sd_b = a.state_dict(), b.state_dict()
    mid = interpolate_state_dicts(sd_a, sd_b, 0.3)
    for name in sd_a:
        if sd_a[name].is_floating_point():
            expected = sd_a[name].double() * 0.7 + sd_b[name].double() * 0.3
            torch.testing.assert_close(mid[name].double(), expected, rtol=1e-6, atol=1e-7)
    assert mid["1.num_batches_tracked"].item() == 7
    assert torch.equal(interpolate_state_dicts(sd_a, sd_b, 0.0)["0.weight"], sd_a["0.weight"])
    torch.testing.assert_close(interpolate_state_dicts(sd_a, sd_b, 1.0)["0.weight"], sd_b["0.weight"])


def test_interpolation_rejects_different_models():
    sd = small_bn_net().state_dict()
    with pytest.raises(LTCError, match="different entries"):
        interpolate_state_dicts(sd, {k: v for k, v in sd.items() if k != "3.bias"}, 0.5)
    other = nn.Sequential(nn.Linear(5, 9), nn.BatchNorm1d(9), nn.ReLU(), nn.Linear(9, 3)).state_dict()
    with pytest.raises(LTCError, match="shape"):
        interpolate_state_dicts(sd, other, 0.5)


def test_identical_copies_have_zero_barrier_and_the_model_is_restored():
    torch.manual_seed(0)
    model = small_bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained = small_bn_net().state_dict()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    result = error_barrier(model, trained, trained, classification_error(x, y), n_points=5)
    assert result["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(set(result["errors"])) == 1 and 0 < result["errors"][0] < 1
    assert result["barrier"] == 0.0 and result["barrier_vs_mean"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_one_parameter_classifier_barrier_by_hand():
    # w(alpha) = -1 + 3 alpha; labels (1, 1, 1, 0) at x = 1: error 1/4 when w^2 > 0.2, else 3/4.
    # w^2 < 0.2 for alpha in (0.184, 0.482): the grid points 0.2, 0.3, 0.4.
    x, y = torch.ones(4), torch.tensor([1, 1, 1, 0])
    result = error_barrier(Scalar(), Scalar(-1.0).state_dict(), Scalar(2.0).state_dict(),
                           classification_error(x, y), n_points=11)
    expected = [0.25, 0.25, 0.75, 0.75, 0.75] + [0.25] * 6
    assert result["errors"] == pytest.approx(expected)
    assert result["barrier"] == pytest.approx(0.5)
    assert result["barrier_alpha"] == pytest.approx(0.2)
    assert result["barrier_vs_mean"] == pytest.approx(0.5)


def test_barrier_is_measured_from_the_line_between_unequal_end_errors():
    # err(w) = 1.3 w - w^2 along w = alpha: ends 0 and 0.3, rise above the chord alpha (1 - alpha),
    # largest at alpha = 0.5 (0.25); the highest error on the grid is 0.42 (alpha = 0.6 and 0.7).
    result = error_barrier(Scalar(), Scalar(0.0).state_dict(), Scalar(1.0).state_dict(),
                           lambda m: 1.3 * m.w.item() - m.w.item() ** 2, n_points=11)
    assert (result["error_a"], result["error_b"]) == pytest.approx((0.0, 0.3))
    assert result["barrier"] == pytest.approx(0.25)
    assert result["barrier_alpha"] == pytest.approx(0.5)
    assert result["barrier_vs_mean"] == pytest.approx(0.42 - 0.15)


def test_pruned_weights_stay_zero_along_the_line():
    torch.manual_seed(0)
    mask = torch.rand(8, 5) > 0.5
    a, b = small_bn_net().state_dict(), small_bn_net().state_dict()
    a["0.weight"] *= mask
    b["0.weight"] *= mask
    seen = []

    def evaluate(model):
        seen.append(model[0].weight.detach().clone())
        return 0.0

    error_barrier(small_bn_net(), a, b, evaluate, n_points=7)
    assert len(seen) == 7
    assert all(not w[~mask].any() for w in seen)
    assert all(w[mask].abs().min() > 0 for w in seen[1:-1])


def test_needs_both_ends():
    sd = small_bn_net().state_dict()
    with pytest.raises(LTCError, match="n_points"):
        error_barrier(small_bn_net(), sd, sd, lambda m: 0.0, n_points=1)
