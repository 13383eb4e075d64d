import pytest
import torch
from torch import nn

from lth.errors import LTCError
from lth.masks import density, full_mask, iou, layer_density, load_mask, save_mask, sparsity_report, validate_mask


def _mask():
    return {"a": torch.tensor([[True, False], [True, True]]), "b": torch.tensor([False, False, True, True])}


def test_density_counts():
    m = _mask()
    assert density(m) == pytest.approx(5 / 8)
    assert layer_density(m) == {"a": 0.75, "b": 0.5}
    report = sparsity_report(m)
    assert report["remaining"] == 5 and report["total"] == 8
    assert report["layers"]["b"]["remaining"] == 2


def test_iou_by_hand():
    a = {"w": torch.tensor([True, True, False, False])}
    b = {"w": torch.tensor([True, False, True, False])}
    out = iou(a, b)
    assert out["w"] == pytest.approx(1 / 3) and out["global"] == pytest.approx(1 / 3)
    assert iou(a, a)["global"] == 1.0
    with pytest.raises(LTCError):
        iou(a, {"v": torch.tensor([True])})


def test_save_load_roundtrip(tmp_path):
    m = _mask()
    save_mask(tmp_path / "m.safetensors", m)
    back = load_mask(tmp_path / "m.safetensors")
    assert set(back) == set(m)
    for k in m:
        assert back[k].dtype == torch.bool and torch.equal(back[k], m[k])


def test_corrupt_mask_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(LTCError, match="cannot read mask"):
        load_mask(path)


def test_validate_against_model():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = full_mask(model, ["0.weight", "1.weight"])
    validate_mask(good, model)
    with pytest.raises(LTCError, match="not a parameter"):
        validate_mask({"2.weight": torch.ones(2, 4, dtype=torch.bool)}, model)
    with pytest.raises(LTCError, match="shape"):
        validate_mask({"0.weight": torch.ones(3, 4, dtype=torch.bool)}, model)
