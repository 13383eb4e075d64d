"""Spectrum keys: the one builder and parser of the names spectra are stored and logged under.

A spectrum is named by where its eigenvectors live and what it is the spectrum of:

    <site>/cov          the activation covariance at a site
    <a>-><b>/jac        the Jacobian Gram E[J^T J] of J = d b / d a (eigenvectors at site a); for
                        sequences the mean over every block J(t, s), s = t and s != t pooled
    <a>-><b>/jac_self   sequences only: the Gram of the s = t blocks (carries a residual identity)
    <a>-><b>/jac_cross  sequences only: the Gram of the s != t blocks (what moves between tokens)
    <a>/jac_vs_cov      the comparison of the two at site a (metrics only)

In a spectra file (`spectra.npz`) each key holds `<key>/eigenvalues` (one row per measurement),
`<key>/eigenvectors` (the last measurement's top k, as columns) and `<key>/<metric>` per
measurement, beside `steps`. W&B scalars are `spectra/<key>/<metric>` (`overlap/<key>/<metric>`
for comparisons).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

COV, JAC, JAC_VS_COV = "cov", "jac", "jac_vs_cov"
JAC_SELF, JAC_CROSS = "jac_self", "jac_cross"
KINDS = (COV, JAC, JAC_SELF, JAC_CROSS, JAC_VS_COV)
JAC_PARTS = {None: JAC, "self": JAC_SELF, "cross": JAC_CROSS}  # which blocks a Gram pools
EIGENVALUES, EIGENVECTORS, STEPS = "eigenvalues", "eigenvectors", "steps"


@dataclass(frozen=True)
class SpectrumKey:
    """What a spectrum is of: `kind` at `site` (a Jacobian's source), `target` b of a Jacobian."""

    kind: str
    site: str
    target: str | None = None

    def __str__(self) -> str:
        where = self.site if self.target is None else f"{self.site}->{self.target}"
        return f"{where}/{self.kind}"

    @classmethod
    def parse(cls, name: str) -> SpectrumKey:
        """The inverse of `str()`: `act.0/cov`, `act.0->act.1/jac`, `act.0/jac_vs_cov`."""
        where, _, kind = name.rpartition("/")
        if kind not in KINDS or not where:
            raise ValueError(
                f"{name!r} is not a spectrum key (<site>/cov, <a>-><b>/jac[_self|_cross], <a>/jac_vs_cov)"
            )
        site, arrow, target = where.partition("->")
        return cls(kind, site, target if arrow else None)

    def field(self, what: str) -> str:
        """A spectra-file field of this key: `eigenvalues`, `eigenvectors` or a metric."""
        return f"{self}/{what}"

    def wandb(self, metric: str) -> str:
        """The W&B scalar of one metric."""
        return f"{'overlap' if self.kind == JAC_VS_COV else 'spectra'}/{self}/{metric}"


def cov_key(site: str) -> SpectrumKey:
    return SpectrumKey(COV, site)


def jac_key(a: str, b: str, part: str | None = None) -> SpectrumKey:
    """The Gram of d b / d a over all blocks (part None), the s = t blocks (`self`) or s != t (`cross`)."""
    return SpectrumKey(JAC_PARTS[part], a, b)


def comparison_key(site: str) -> SpectrumKey:
    return SpectrumKey(JAC_VS_COV, site)


def metric_fields(fields: Iterable[str]) -> list[tuple[SpectrumKey, str]]:
    """(key, metric) of every per-measurement metric among a spectra file's fields (not the
    eigenvalues, the eigenvectors or the steps)."""
    out = []
    for name in fields:
        parts = name.split("/")  # sites have no '/', metric names may (`sensitivity/...`)
        kind = next((i for i, part in enumerate(parts[1:], start=1) if part in KINDS), None)
        what = "/".join(parts[kind + 1:]) if kind is not None else ""
        if what and what not in (EIGENVALUES, EIGENVECTORS):
            out.append((SpectrumKey.parse("/".join(parts[: kind + 1])), what))
    return out


def final_metrics(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The last measurement of every spectrum metric of a spectra file, by W&B name (the W&B
    summary of a job and the report's metrics table both show these)."""
    return {key.wandb(metric): float(np.asarray(arrays[key.field(metric)])[-1])
            for key, metric in metric_fields(arrays)}


def stored_keys(fields: Iterable[str]) -> list[SpectrumKey]:
    """The spectra (keys with eigenvalues) among a spectra file's fields, in file order."""
    suffix = f"/{EIGENVALUES}"
    return [SpectrumKey.parse(f[: -len(suffix)]) for f in fields if f.endswith(suffix)]
