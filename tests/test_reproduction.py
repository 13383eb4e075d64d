"""The MNIST-1D notebook reproduction: its model, its data order, its recipe, its published
numbers, and the report section that sets ours beside them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from channels.verdict.rundata import RunData, Trained
from experiments.commands.seeds import build_parser
from experiments.config import parse
from experiments.data.mnist1d import MNIST1DNotebookDataModule, generate
from experiments.models.mlp import ResidualMLP
from experiments.report.document import Figure, render_markdown
from experiments.report.reproduction import REFERENCES, Reference, comparison
from experiments.report.verdict import verdict_document
from lth.config import ImpConfig
from lth.data_order import step_indexed_loader
from lth.layout import ReportFiles
from lth.masks import full_mask
from lth.pruning import magnitude_prune, select_prunable

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "mnist1d_notebook.yaml"


def test_residual_mlp_is_the_notebooks_formula_with_default_linear_init():
    torch.manual_seed(0)
    net = ResidualMLP(in_features=40, width=50, num_classes=10)
    x = torch.randn(7, 40)
    w1, w2, w3 = net.hidden[0], net.hidden[1], net.out
    h = torch.relu(x @ w1.weight.T + w1.bias)
    h = h + torch.relu(h @ w2.weight.T + w2.bias)
    assert torch.allclose(net(x), h @ w3.weight.T + w3.bias, atol=1e-6)
    assert [n for n, _ in net.named_parameters()] == ["hidden.0.weight", "hidden.0.bias", "hidden.1.weight",
                                                      "hidden.1.bias", "out.weight", "out.bias"]
    torch.manual_seed(1)
    built = ResidualMLP(in_features=40, width=50, num_classes=10)
    torch.manual_seed(1)
    plain = [nn.Linear(40, 50), nn.Linear(50, 50), nn.Linear(50, 10)]  # the notebook's layers, in its order
    assert all(torch.equal(a, b) for a, b in zip(built.parameters(), (p for layer in plain for p in layer.parameters())))
    assert ResidualMLP(blocks=0, width=8)(x).shape == (7, 10)


def test_notebook_data_is_every_training_example_in_stored_order_in_sequential_batches():
    dm = MNIST1DNotebookDataModule(batch_size=100)
    dm.setup("fit")
    raw = generate(5000, 42)
    x = torch.as_tensor(np.asarray(raw["x"]), dtype=torch.float32)
    train, _ = step_indexed_loader(dm.train_dataloader(), seed=3, total_steps=42)
    batches = [b[0] for b in train]
    assert len(batches) == 42
    assert torch.equal(batches[0], x[:100]) and torch.equal(batches[39], x[3900:4000])
    assert torch.equal(batches[40], x[:100])  # the next pass: the same order again
    test = dm.test_dataloader().dataset.tensors[0]
    assert torch.equal(dm.val_dataloader().dataset.tensors[0], test) and len(test) == 1000
    shuffled, _ = step_indexed_loader(MNIST1DNotebookDataModule(shuffle=True).train_dataloader(), 3, 1)
    assert not torch.equal(next(iter(shuffled))[0], x[:100])


def test_the_recipe_prunes_each_layer_to_the_notebooks_density():
    cfg = parse(build_parser(), ["--config", str(RECIPE)])
    imp = ImpConfig(**vars(cfg.imp))
    imp.validate(cfg.trainer.max_steps)
    assert (cfg.seeds, imp.levels, imp.score_step, cfg.trainer.max_steps) == ([0, 1, 2], 91, 1001, 1501)
    net = ResidualMLP()
    names = select_prunable(net, imp.include, imp.ignore)
    assert len(names) == 6  # weights and biases of the three layers, output included
    weights = dict(net.named_parameters())
    for level, density in ((89, 1 - 89 / 99), (91, 1 - 91 / 99)):
        mask = magnitude_prune(weights, full_mask(net, names), imp.prune_fraction, imp.strategy,
                               imp.rate_overrides, imp.schedule, level)
        for module in ("hidden.0", "hidden.1", "out"):
            kept = sum(int(mask[f"{module}.{p}"].sum()) for p in ("weight", "bias"))
            total = sum(mask[f"{module}.{p}"].numel() for p in ("weight", "bias"))
            assert kept / total == pytest.approx(density, abs=1 / total)


def test_the_published_numbers_are_those_the_notebook_printed():
    ref = Reference.load(REFERENCES["mnist1d_notebook"])
    assert ref.values("ticket", 1) == ref.values("random", 1) == [63.7, 63.3]  # dense: the same init and data
    assert ref.values("ticket", 90) == [73.4, 72.8] and ref.values("random", 90) == [62.5, 63.6]
    assert ref.values("ticket", 92) == [73.0, 73.9] and ref.values("random", 92) == [60.5, 63.6]
    assert ref.density(90) == pytest.approx(0.1010, abs=1e-4) and ref.density(92) == pytest.approx(0.0808, abs=1e-4)


def _run(seed: int, ticket: dict[int, float], random: dict[int, float],
         random_per_layer: dict[int, float] | None = None) -> RunData:
    density = {lvl: 1 - lvl / 99 for lvl in range(100)}
    def jobs(accs, branch):
        return {lvl: Trained(Path("."), lvl, branch, {"density": density[lvl], "test": {"test/acc": a / 100}})
                for lvl, a in accs.items()}
    return RunData(Path(f"seed_{seed}"), {"experiment": "mnist1d_notebook", "seed_everything": seed},
                   jobs(ticket, None), {"random_prune": jobs(random, "random_prune"),
                                        "random_prune_module": jobs(random_per_layer or {}, "random_prune_module")})


def test_the_report_sets_ours_beside_theirs_with_intervals(tmp_path):
    tickets = [{0: 64.0, 89: 72.0, 91: 71.0}, {0: 63.0, 89: 74.0, 91: 72.5}, {0: 65.5, 89: 73.0, 91: 69.0}]
    randoms = [{89: 60.0, 91: 58.0}, {89: 62.0, 91: 61.0}, {89: 64.0, 91: 60.0}]
    per_layer = [{89: 63.0, 91: 62.0}, {89: 62.5, 91: 61.5}, {89: 63.5, 91: 62.5}]
    runs = [_run(s, t, r, p) for s, (t, r, p) in enumerate(zip(tickets, randoms, per_layer))]
    files = ReportFiles(tmp_path)
    found = comparison(runs, files)
    rows = {(round(r["remaining"], 1), r["line"]): r for r in found["rows"]}
    row = rows[(10.1, "ticket")]
    assert row["level"] == 89 and row["ours"] == pytest.approx([72.0, 74.0, 73.0]) and row["theirs"] == [73.4, 72.8]
    values = np.array([72.0, 74.0, 73.0])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert row["interval"] == pytest.approx([73.0 - half, 73.0 + half])
    assert row["difference"] == pytest.approx(73.0 - 73.1) and row["within"]
    far = rows[(8.1, "random prune per tensor")]
    assert far["difference"] == pytest.approx(59.666667 - 62.05, abs=1e-4) and not far["within"]
    near = rows[(8.1, "random prune per layer")]  # the notebook's own baseline, beside theirs
    assert near["ours"] == pytest.approx([62.0, 61.5, 62.5]) and near["within"]
    assert rows[(100.0, "dense")]["ours"] == pytest.approx([64.0, 63.0, 65.5])
    assert not any(line.startswith("random") for remaining, line in rows if remaining == 100.0)
    assert (tmp_path / "figures" / "reproduction.png").stat().st_size > 10_000
    other = _run(0, {0: 60.0}, {})
    other.config["experiment"] = "mnist1d_imp"
    assert comparison([other], files) is None  # no published reference: no section


def test_the_reproduction_section_follows_the_readings(tmp_path):
    runs = [_run(s, {0: 63.0 + s, 89: 72.0 + s}, {89: 62.0 + s}) for s in range(3)]
    found = comparison(runs, ReportFiles(tmp_path))
    result = {"verdict": "no ticket", "why": "-", "provisional": True, "rule": "-", "tests": {}, "sites": {},
              "calibration": None, "runs": [], "stability": {"rows": [], "summary": "-"}, "experiment": "x",
              "reproduction": found}
    figures = [Figure("reproduction", tmp_path / "figures" / "reproduction.png", "c"),
               Figure("accuracy", tmp_path / "figures" / "accuracy.png", "a")]
    doc = verdict_document(result, figures)
    titles = [section.title for section in doc.sections]
    assert titles[:3] == ["Figures", "Readings", titles[2]] and titles[2].startswith("Reproduction: MNIST-1D")
    assert [f.name for f in doc.sections[2].figures] == ["reproduction"]
    assert [f.name for f in doc.sections[0].figures] == ["accuracy"]  # drawn once, in its own section
    text = render_markdown(doc)
    assert "| 10.1 | ticket | 89 | 73.0 [" in text and "73.1 (73.4, 72.8)" in text
