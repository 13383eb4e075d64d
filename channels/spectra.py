"""One spectra measurement of a network on a fixed probe set, and its history across training.

At each covariance site: eigenvalues of the activation covariance (rows = samples, tokens or
conv positions). At each Jacobian pair a->b: eigenvalues of the expected Gram E[J^T J] of
J = d b / d a over the probe examples; for sequences over every block J(t, s) of every target t
(`<a>-><b>/jac`), and apart over the s = t blocks (`jac_self`, which carry the residual
identity for resid -> resid) and the s != t blocks (`jac_cross`). At site a, the pooled Gram and
the whitened Gram are compared with the covariance (`channels.agreement.jacobian_vs_covariance`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from channels.agreement import jacobian_vs_covariance
from channels.covariance import StreamingCovariance, rows_from_activation
from channels.jacobian import GramAccumulator, iter_sequence_jacobian, site_jacobian
from channels.keys import EIGENVALUES, EIGENVECTORS, STEPS, SpectrumKey, comparison_key, cov_key, jac_key
from channels.metrics import eigh_desc, spectrum_metrics
from channels.sites import call_model, capture, resolve_sites
from channels.sweep.plan import parse_pair
from lth.errors import LTCError


@dataclass
class SpectraConfig:
    """What the spectra callback measures, and how often.

    Args:
        enabled: measure at all.
        sites: covariance sites (module paths such as `act.0`, or `resid_post.3` etc. for transformers).
        jacobians: Jacobian pairs `a->b`, each giving the expected Gram E[J^T J] of d b / d a.
        every_n_steps: measure at step 0, every n steps, and at the end of fit.
        probe_size: probe examples for the covariance (the first of the validation set).
        jacobian_probe_size: probe examples (or sequences) for the Jacobians.
        top_k: eigenvectors kept and the k of top-k share and subspace overlap.
        rtol: relative tolerance of the numerical rank.
    """

    enabled: bool = True
    sites: list[str] = field(default_factory=list)
    jacobians: list[str] = field(default_factory=list)
    every_n_steps: int = 500
    probe_size: int = 256
    jacobian_probe_size: int = 64
    top_k: int = 8
    rtol: float = 1e-3

    def pairs(self) -> list[tuple[str, str]]:
        out = []
        for spec in self.jacobians:
            try:
                pair = parse_pair(spec)
            except LTCError:  # the same check, in the words of this config section
                raise LTCError(
                    f"spectra.jacobians entry {spec!r} is not of the form 'site_a->site_b'"
                ) from None
            out.append((pair.a, pair.b))
        return out

    def validate(self) -> None:
        if self.every_n_steps < 1 or self.probe_size < 2 or self.jacobian_probe_size < 1 or self.top_k < 1:
            raise LTCError("spectra: every_n_steps, jacobian_probe_size and top_k must be >= 1, probe_size >= 2")
        self.pairs()


def _rows(activation: torch.Tensor) -> torch.Tensor:
    """Conv maps (B, C, H, W) -> rows of C channels; (B, d) and (B, T, d) -> rows of d."""
    return rows_from_activation(activation, channel_dim=1 if activation.ndim == 4 else None)


def _grams(model: nn.Module, probe, a: str, b: str, step: int) -> dict[str | None, torch.Tensor]:
    """E[J^T J] of d b / d a over the probe: pooled (None), and for sequences `self` and `cross`.

    Sequences: every target t of every probe sequence, all sources; the blocks with s = t and
    s != t go to separate accumulators, and the pooled Gram is their count-weighted mean.
    """
    tokens = probe["input_ids"] if isinstance(probe, dict) else probe
    sequence = not torch.is_floating_point(tokens) and tokens.ndim == 2
    parts: dict[str, GramAccumulator] = {}
    try:
        if sequence:
            for i in range(tokens.shape[0]):
                one = {k: v[i : i + 1] for k, v in probe.items()} if isinstance(probe, dict) else tokens[i : i + 1]
                for t, block in iter_sequence_jacobian(model, one, a, b):
                    split = {"self": block[t : t + 1], "cross": torch.cat([block[:t], block[t + 1 :]])}
                    for part, chosen in split.items():
                        if len(chosen):
                            if part not in parts:
                                parts[part] = GramAccumulator(block.shape[-1])
                            parts[part].update(chosen)
        else:
            blocks = site_jacobian(model, probe, a, b)
            parts["all"] = GramAccumulator(blocks.shape[-1])
            parts["all"].update(blocks)
    except LTCError as exc:
        raise LTCError(f"{exc} (at step {step})") from exc
    pooled = GramAccumulator(next(iter(parts.values())).total.shape[0])
    for acc in parts.values():
        pooled.merge(acc)
    out: dict[str | None, torch.Tensor] = {None: pooled.mean()}
    if sequence:
        out |= {part: acc.mean() for part, acc in parts.items()}
    return out


def measure(model: nn.Module, probe, jacobian_probe, cfg: SpectraConfig, step: int) -> dict[str, dict]:
    """Spectra of `model` on the probe set.

    Returns {key: {"eigenvalues", "eigenvectors" (top k), "metrics"}} with the keys of
    `channels.keys` (`<site>/cov`, `<a>-><b>/jac`, and `<a>/jac_vs_cov` holding only metrics).
    """
    was_training = model.training
    model.eval()
    out: dict[str, dict] = {}
    try:
        sites = resolve_sites(model, cfg.sites)
        with torch.no_grad(), capture(model, sites) as acts:
            call_model(model, probe)
        covs: dict[str, torch.Tensor] = {}
        for site in sites:
            if site.name not in acts:
                raise LTCError(f"site {site.name} was not reached by the forward pass")
            rows = _rows(acts[site.name])
            cov = StreamingCovariance(rows.shape[1], name=site.name)
            cov.update(rows, step=step)
            covs[site.name] = cov.covariance()
            out[str(cov_key(site.name))] = _entry(*eigh_desc(covs[site.name]), cfg)
        for a, b in cfg.pairs():
            with torch.enable_grad():
                grams = _grams(model, jacobian_probe, a, b, step)
            for part, gram in grams.items():
                out[str(jac_key(a, b, part))] = _entry(*eigh_desc(gram), cfg)
            if a in covs and covs[a].shape == grams[None].shape:
                k = min(cfg.top_k, grams[None].shape[0])
                out[str(comparison_key(a))] = {"metrics": jacobian_vs_covariance(
                    grams[None], covs[a], k, cfg.rtol)}
    finally:
        model.train(was_training)
    return out


def _entry(values: np.ndarray, vectors: np.ndarray, cfg: SpectraConfig) -> dict:
    k = min(cfg.top_k, len(values))
    return {"eigenvalues": values, "eigenvectors": vectors[:, :k],
            "metrics": spectrum_metrics(values, k=k, rtol=cfg.rtol)}


class SpectraHistory:
    """Every measurement's eigenvalues and metrics, and the last one's top-k eigenvectors."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.series: dict[str, list[np.ndarray]] = {}
        self.last_vectors: dict[str, np.ndarray] = {}

    def add(self, step: int, measurement: dict[str, dict]) -> None:
        if self.steps and self.steps[-1] == step:  # the end of fit can coincide with a periodic step
            self.steps.pop()
            for values in self.series.values():
                values.pop()
        self.steps.append(step)
        for name, entry in measurement.items():
            key = SpectrumKey.parse(name)
            if EIGENVALUES in entry:
                self.series.setdefault(key.field(EIGENVALUES), []).append(np.asarray(entry[EIGENVALUES]))
                self.last_vectors[key.field(EIGENVECTORS)] = np.asarray(entry[EIGENVECTORS])
            for metric, value in entry["metrics"].items():
                self.series.setdefault(key.field(metric), []).append(np.asarray(value, dtype=np.float64))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {STEPS: np.asarray(self.steps, dtype=np.int64)}
        out.update({k: np.stack(v) for k, v in self.series.items()})
        out.update(self.last_vectors)
        return out

    def state_dict(self) -> dict:
        """Tensors and plain types only (checkpoints load with weights_only=True)."""
        return {"steps": list(self.steps),
                "series": {k: torch.from_numpy(np.stack(v)) for k, v in self.series.items()},
                "last_vectors": {k: torch.from_numpy(v) for k, v in self.last_vectors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = list(state["steps"])
        self.series = {k: list(v.numpy()) for k, v in state["series"].items()}
        self.last_vectors = {k: v.numpy() for k, v in state["last_vectors"].items()}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed npz (no pickled objects) via a temporary name."""
    from lth.rundir import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read a spectra npz; refuses pickled object arrays (which could run code when loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        raise LTCError(f"{path} holds pickled objects ({' '.join(str(exc).split())[:120]}); spectra files "
                       "hold plain arrays only: delete it and re-run `ltc imp` to measure it again") from exc
