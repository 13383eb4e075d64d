"""The ticket tests on synthetic run directories whose answer is known by construction.

Three worlds, written with the project's own writers (no training):
- subcircuits: the function lives on a few axis-aligned units; every ticket of an init keeps
  those units' weights (large), plus small filler weights that differ between data orders;
- channels: the function flows along a dense, randomly rotated low-rank subspace; tickets of
  different data orders keep different (random) weights but the same subspace;
- noise: random masks, random weights, white spectra.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from channels.metrics import spectrum_metrics
from channels.rundata import load_run
from channels.spectra import save_npz
from channels.ticket_stats import bootstrap_ci, weighted_iou, weighted_iou_excess
from channels.tickets import (
    CHANNELS,
    INCONCLUSIVE,
    NOT_RUN,
    SUBCIRCUITS,
    run_tests,
    t3_identity_vs_subspace,
    t4_localisation,
    verdict,
)
from channels.units import (
    align_units,
    localisation,
    mlp_unit_layout,
    permute_units,
    unit_keep_fraction,
)
from lth import rundir
from lth.errors import LTCError
from lth.masks import save_mask

IN, D, OUT, K, CORE = 16, 48, 8, 4, 4
DENSITIES = [1.0, 0.6, 0.4, 0.25]
BRANCH_LEVELS = (2, 3)


def _random_mask(shape, density, rng, keep=None) -> torch.Tensor:
    """Exactly round(density * n) entries kept; entries in `keep` (bool array) first."""
    n = int(np.prod(shape))
    count = round(density * n)
    order = rng.permutation(n)
    if keep is not None:
        flat = keep.reshape(-1)
        order = np.concatenate([order[flat[order]], order[~flat[order]]])
    mask = np.zeros(n, dtype=bool)
    mask[order[:count]] = True
    return torch.from_numpy(mask.reshape(shape))


def _eigh_desc(cov):
    values, vectors = np.linalg.eigh(cov)
    return np.clip(values[::-1], 0, None), vectors[:, ::-1]


def _noise_cov(rng, scale, n=400):
    x = rng.normal(size=(n, D)) * scale
    return x.T @ x / n


class World:
    """Weights, masks, covariances and accuracies of one init seed in one synthetic world."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind, self.rng = kind, np.random.default_rng(seed)
        self.core = self.rng.choice(D, CORE, replace=False)
        self.rotation = np.linalg.qr(self.rng.normal(size=(D, D)))[0]
        w0, out = self.rng.normal(size=(D, IN)), self.rng.normal(size=(OUT, D))
        if kind == "subcircuits":
            scale = np.full(D, 0.1)
            scale[self.core] = 1.0
            w0, out = w0 * scale[:, None], out * scale[None, :]
        elif kind == "channels":
            basis = self.rotation[:, :K]
            w0 = basis @ self.rng.normal(size=(K, IN)) + 0.02 * w0
            out = self.rng.normal(size=(OUT, K)) @ basis.T + 0.02 * out
        self.dense = {"hidden.0.weight": w0, "out.weight": out}

    def trained(self, rng) -> dict[str, np.ndarray]:
        return {n: w + 0.02 * rng.normal(size=w.shape) for n, w in self.dense.items()}

    def ticket_mask(self, density, rng) -> dict[str, torch.Tensor]:
        if self.kind != "subcircuits":
            return {n: _random_mask(w.shape, density, rng) for n, w in self.dense.items()}
        rows = np.zeros((D, IN), dtype=bool)
        rows[self.core] = True
        cols = np.zeros((OUT, D), dtype=bool)
        cols[:, self.core] = True
        return {"hidden.0.weight": _random_mask((D, IN), density, rng, rows),
                "out.weight": _random_mask((OUT, D), density, rng, cols)}

    def cov(self, mask, rng) -> np.ndarray:
        if self.kind == "noise":
            return _noise_cov(rng, 1.0)
        if self.kind == "channels":
            basis = self.rotation[:, :K]
            return basis @ np.diag([10.0, 8.0, 6.0, 5.0]) @ basis.T + 0.05 * np.eye(D) + _noise_cov(rng, 0.05)
        variance = np.full(D, 0.05)
        variance[self.core] = [10.0, 8.0, 6.0, 5.0]
        kept_inputs = mask["hidden.0.weight"].double().mean(1).numpy()
        return np.diag(variance * kept_inputs) + _noise_cov(rng, 0.05)

    def accuracy(self, line: str, level: int, rng) -> float:
        if self.kind == "noise":
            return float(rng.uniform(0.1, 0.5))
        if line == "ticket" or self.kind == "channels":
            return 0.9 - 0.01 * level + float(rng.normal(0, 0.003))
        return 0.6 + float(rng.normal(0, 0.01))


def _write_job(directory, level, branch, mask, weights, cov, acc):
    directory.mkdir(parents=True, exist_ok=True)
    save_mask(directory / "mask.safetensors", mask)
    rundir.save_tensors(directory / "weights.safetensors",
                        {n: torch.from_numpy(w).float() * mask[n] for n, w in weights.items()})
    values, vectors = _eigh_desc(cov)
    arrays = {"steps": np.array([0, 100]), "act.0/cov/eigenvalues": np.stack([values, values]),
              "act.0/cov/eigenvectors": vectors[:, :K].copy()}
    for name, value in spectrum_metrics(values, k=K).items():
        arrays[f"act.0/cov/{name}"] = np.array([value, value])
    save_npz(directory / "spectra.npz", arrays)
    dens = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    rundir.write_json(directory / "metrics.json", {
        "job": directory.name, "level": level, "branch": branch, "density": dens,
        "layer_density": {n: float(m.float().mean()) for n, m in mask.items()},
        "evaluations": [], "test": {"test/acc": acc, "test/loss": 1.0 - acc}, "steps": 100, "train_time_s": 0.0})
    rundir.mark_done(directory, ["mask.safetensors", "weights.safetensors", "metrics.json", "spectra.npz"])


def write_fake_run(path, kind: str, seed: int, data_order: int, branches: bool = True):
    """A finished run dir of `kind` (subcircuits / channels / noise) for one init and data order."""
    world = World(kind, seed)
    rng = np.random.default_rng(1000 + 100 * seed + data_order)
    path.mkdir(parents=True)
    config = {"experiment": f"fake_{kind}", "seed_everything": seed, "data_order_seed": data_order,
              "spectra": {"sites": ["act.0"], "top_k": K}}
    rundir.write_text(path / "config.yaml", yaml.safe_dump(config))
    rundir.save_tensors(path / "init.safetensors", {n: torch.from_numpy(w).float() for n, w in world.dense.items()})
    for level, density in enumerate(DENSITIES):
        mask = world.ticket_mask(density, rng)
        _write_job(path / f"level_{level:02d}", level, None, mask, world.trained(rng), world.cov(mask, rng),
                   world.accuracy("ticket", level, rng))
        if branches and level in BRANCH_LEVELS:
            for branch in ("random_prune", "shuffle"):
                control = {n: _random_mask(m.shape, density, rng) for n, m in mask.items()}
                _write_job(path / "branches" / branch / f"level_{level:02d}", level, branch, control,
                           world.trained(rng), world.cov(control, rng), world.accuracy(branch, level, rng))
    return path


def fake_runs(root, kind: str, seeds=(0, 1, 2), data_orders=(0, 1)):
    """Runs of every seed, the first data order with controls, the others without."""
    return [load_run(write_fake_run(root / f"{kind}_s{s}_d{o}", kind, s, o, branches=o == data_orders[0]))
            for s in seeds for o in data_orders]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    return {kind: fake_runs(root, kind) for kind in ("subcircuits", "channels", "noise")}


@pytest.mark.parametrize("kind, expected", [("subcircuits", SUBCIRCUITS), ("channels", CHANNELS),
                                            ("noise", INCONCLUSIVE)])
def test_identity_and_localisation_read_the_world(worlds, kind, expected):
    t3 = t3_identity_vs_subspace(worlds[kind], n_boot=500)
    t4 = t4_localisation(worlds[kind], n_boot=500)
    assert t3.reading == expected, (t3.effect, t3.ci, t3.details["identity"], t3.details["similarity"])
    assert t4.reading == expected, (t4.effect, t4.ci, t4.details["dense_strength"])
    assert len(t3.units) == 3 and not t3.provisional
    assert len(t3.details["pairs"]) == 3 and all(p["kind"] == "same init" for p in t3.details["pairs"])


@pytest.mark.parametrize("kind, expected", [("subcircuits", SUBCIRCUITS), ("channels", CHANNELS),
                                            ("noise", INCONCLUSIVE)])
def test_verdict_reads_the_world(worlds, kind, expected):
    results = run_tests(worlds[kind], n_boot=500)
    assert [r.test for r in results] == ["T1", "T2", "T3", "T4", "T5", "T6"]
    assert results[-1].reading == NOT_RUN  # no rotated line
    out = verdict(results)
    assert out["verdict"] == expected, {r.test: r.reading for r in results}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_controls_read_positions(worlds):
    results = {kind: run_tests(runs, n_boot=500)[4] for kind, runs in worlds.items()}
    assert results["subcircuits"].reading == SUBCIRCUITS
    assert results["subcircuits"].effect == pytest.approx(0.9 - 0.03 - 0.6, abs=0.03)
    assert results["channels"].reading == CHANNELS
    gaps = {(g["level"], g["control"]) for g in results["subcircuits"].details["gaps"]}
    assert gaps == {(2, "random_prune"), (2, "shuffle"), (3, "random_prune"), (3, "shuffle")}


def test_one_seed_reads_provisionally(worlds):
    t4 = t4_localisation(worlds["subcircuits"][:1], n_boot=200)
    assert t4.provisional and math.isnan(t4.ci[0]) and t4.reading == SUBCIRCUITS


@pytest.mark.parametrize("n, draw", [(10, lambda rng, n: rng.normal(1.0, 2.0, n)),
                                     (20, lambda rng, n: rng.exponential(1.0, n))])
def test_bootstrap_interval_covers_at_nominal_rate(n, draw):
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(200):
        lo, hi = bootstrap_ci(draw(rng, n), level=0.95, n_boot=1000, seed=rep)
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99, hits


def test_bootstrap_small_samples():
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    lo, hi = bootstrap_ci([0.1, 0.5, 0.3])
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.5)  # n = 3: about the range


def test_localisation_by_hand():
    keep = np.array([1.0, 1.0, 0.0, 0.0])
    on_kept = np.array([[1.0], [1.0], [0.0], [0.0]])
    found = localisation(on_kept, np.array([1.0]), keep)
    assert found["share"] == pytest.approx(1.0) and found["score"] == pytest.approx(1.0)
    assert found["null_mean"] == pytest.approx(0.5) and found["p_value"] < 0.3
    spread = localisation(np.ones((4, 1)), np.array([1.0]), keep)
    assert spread["score"] == pytest.approx(0.0) and spread["p_value"] == pytest.approx(1.0)
    assert math.isnan(localisation(on_kept, np.array([1.0]), np.full(4, 0.5))["score"])


def test_unit_layout_and_keep_fraction():
    names = ["hidden.0.weight", "hidden.1.weight", "out.weight"]
    assert mlp_unit_layout(names, "act.0") == [("hidden.0.weight", 0), ("hidden.1.weight", 1)]
    assert mlp_unit_layout(names, "act.1") == [("hidden.1.weight", 0), ("out.weight", 1)]
    assert mlp_unit_layout(names, "resid_post.0") is None
    mask = {"hidden.0.weight": torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool),
            "hidden.1.weight": torch.tensor([[1, 0]], dtype=torch.bool)}
    keep = unit_keep_fraction(mask, [("hidden.0.weight", 0), ("hidden.1.weight", 1)])
    np.testing.assert_allclose(keep, [4 / 4, 0 / 4])


def test_align_units_undoes_a_permutation():
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(200, 6))
    perm = rng.permutation(6)
    shuffled = acts[:, np.argsort(perm)]  # unit j of a is unit perm[j] of b
    found = align_units(acts, shuffled)
    np.testing.assert_array_equal(shuffled[:, found], acts)
    weights = {"hidden.0.weight": torch.arange(12.0).reshape(6, 2), "out.weight": torch.arange(18.0).reshape(3, 6)}
    layout = [("hidden.0.weight", 0), ("out.weight", 1)]
    moved = permute_units(permute_units(weights, layout, np.argsort(found)), layout, found)
    assert all(torch.equal(moved[n], weights[n]) for n in weights)


def test_weighted_iou():
    a = torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert weighted_iou(a, 3 * a) == pytest.approx(1.0)
    assert weighted_iou(a, torch.tensor([0.0, 0.0, 1.0, 1.0])) == 0.0
    gen = torch.Generator().manual_seed(0)
    big = torch.rand(2000) * (torch.rand(2000) < 0.2)
    assert weighted_iou_excess(big, big, gen) == pytest.approx(1.0)
    assert abs(weighted_iou_excess(big, torch.rand(2000) * (torch.rand(2000) < 0.2), gen)) < 0.1


def _relabel_units(run_dir, perm, seed):
    """Rewrite a fake run with its hidden units permuted and its init seed changed (same function)."""
    layout = [("hidden.0.weight", 0), ("out.weight", 1)]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config.update(seed_everything=seed, data_order_seed=seed)
    rundir.write_text(run_dir / "config.yaml", yaml.safe_dump(config))
    init = rundir.load_tensors(run_dir / "init.safetensors")
    rundir.save_tensors(run_dir / "init.safetensors", permute_units(init, layout, perm))
    for job in sorted(run_dir.rglob("DONE")):
        directory = job.parent
        mask = {n: t.bool() for n, t in rundir.load_tensors(directory / "mask.safetensors").items()}
        save_mask(directory / "mask.safetensors", permute_units(mask, layout, perm))
        weights = rundir.load_tensors(directory / "weights.safetensors")
        rundir.save_tensors(directory / "weights.safetensors", permute_units(weights, layout, perm))
        arrays = dict(np.load(directory / "spectra.npz"))
        arrays["act.0/cov/eigenvectors"] = arrays["act.0/cov/eigenvectors"][perm]
        save_npz(directory / "spectra.npz", arrays)
        rundir.mark_done(directory, ["mask.safetensors", "weights.safetensors", "metrics.json", "spectra.npz"])


def test_cross_init_pairs_use_matched_units_and_cka(tmp_path):
    """Two inits whose hidden units are a permutation of each other: once the units are matched by
    their activations the tickets coincide (identity 1), and CKA sees the same channels."""
    run_a = load_run(write_fake_run(tmp_path / "a", "subcircuits", 0, 0))
    perm = np.random.default_rng(3).permutation(D)
    _relabel_units(write_fake_run(tmp_path / "b", "subcircuits", 0, 0), perm, seed=1)
    run_b = load_run(tmp_path / "b")
    assert not torch.equal(run_a.levels[3].mask["hidden.0.weight"], run_b.levels[3].mask["hidden.0.weight"])
    probe = np.random.default_rng(0).normal(size=(300, IN))

    def activations(run, which):
        weights = run.init_weights() if which == "init" else run.levels[which].weights
        return {"act.0": np.maximum(probe @ weights["hidden.0.weight"].double().numpy().T, 0)}

    t3 = t3_identity_vs_subspace([run_a, run_b], activations, n_boot=200)
    (pair,) = t3.details["pairs"]
    assert pair["kind"] == "different init"
    assert pair["identity"] == pytest.approx(1.0, abs=1e-6)
    assert pair["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert t3_identity_vs_subspace([run_a, run_b], None, n_boot=200).details["skipped"] == ["s0~s1"]


def test_bad_run_dirs(tmp_path):
    with pytest.raises(LTCError, match="not a directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LTCError, match="no config.yaml"):
        load_run(tmp_path / "empty")
    rundir.write_text(tmp_path / "empty" / "config.yaml", "seed_everything: 0\n")
    with pytest.raises(LTCError, match="no finished levels"):
        load_run(tmp_path / "empty")


def _add_rotated_line(run_dir, accuracy_drop: float) -> None:
    """A `branches/rotated` IMP line: the ticket line's jobs with test accuracy lowered by
    `accuracy_drop` at each pruned level (0 at the dense level)."""
    import shutil

    for level_dir in sorted(run_dir.glob("level_*")):
        target = run_dir / "branches" / "rotated" / level_dir.name
        shutil.copytree(level_dir, target)
        metrics = json.loads((target / "metrics.json").read_text())
        metrics["branch"] = "rotated"
        metrics["test"]["test/acc"] -= accuracy_drop * (metrics["level"] > 0)
        rundir.write_json(target / "metrics.json", metrics)
        rundir.mark_done(target, ["mask.safetensors", "weights.safetensors", "metrics.json", "spectra.npz"])


@pytest.mark.parametrize("drop, expected", [(0.2, SUBCIRCUITS), (0.0, CHANNELS)])
def test_rotation_reads_the_basis_dependence(tmp_path, drop, expected):
    runs = []
    for seed in (0, 1, 2):
        path = write_fake_run(tmp_path / f"s{seed}", "channels", seed, 0, branches=False)
        _add_rotated_line(path, drop)
        runs.append(load_run(path))
    t6 = run_tests(runs, n_boot=200)[5]
    assert t6.reading == expected and t6.effect == pytest.approx(drop, abs=1e-6)
    assert [g["level"] for g in t6.details["gaps"]] == [0, 1, 2, 3]
    t5 = run_tests(runs, n_boot=200)[4]
    assert t5.reading == NOT_RUN  # the rotated line is no control of the ticket line


def test_docstrings_state_the_thresholds_the_code_uses():
    from channels import tickets as t

    cases = [(t.t1_spectral_signature, [t.T1_MARGIN, t.GATE]), (t.t2_channel_preservation, [t.T2_MARGIN, t.T2_KEPT]),
             (t.t3_identity_vs_subspace, [t.T3_MARGIN, t.T3_IDENTITY]),
             (t.t4_localisation, [t.T4_SUBCIRCUITS, t.T4_CHANNELS, t.GATE]),
             (t.t5_controls, [t.ACC_MARGIN]), (t.t6_rotation, [t.ACC_MARGIN])]
    for function, values in cases:
        text = " ".join(function.__doc__.split())
        assert all(str(v) in text for v in values), function.__name__
        assert f"Weight {t.WEIGHTS[function.__doc__.split()[0]]}" in text or \
            f"weight {t.WEIGHTS[function.__doc__.split()[0]]}" in text, function.__name__
