"""The ticket tests: are lottery tickets information channels or subcircuits? (DESIGN.md, "The ticket tests")

Two readings of a ticket: a *subcircuit* (a particular sparse set of weights and units does the
job) or *channels* (a few distributed directions of information flow, which no sparse set of
weights picks out). Each test T1..T6 reads finished run directories and gives a per-seed
statistic, its null, the mean effect with a bootstrap interval over seeds (`bootstrap_ci`), and
a reading: channels / subcircuits / inconclusive (or `not run` when the runs lack what it needs).
The rule that decides is in each test's docstring and in its result's `rule`.

Units of the bootstrap are init seeds: runs sharing an init (data-order variants) are averaged
first. With one seed there is no interval: the reading then compares the point estimate with
the thresholds and is marked provisional.

Channels are the final top-k eigenvectors of each measured spectrum (`<site>/cov`, and
`<a>-><b>/jac` whose eigenvectors live at site a). Runs of one init share unit labels (rewinding
keeps them), so unit-aligned comparisons are made only there; across inits the units are first
matched by their activations, and channels are compared by the basis-free linear CKA.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations

import numpy as np
import torch

from channels.metrics import entropy_effective_rank, participation_ratio, top_share
from channels.rundata import (
    RunData,
    Trained,
    final_eigenvalues,
    key_site,
    spectrum_keys,
    top_vectors,
)
from channels.ticket_stats import (
    bootstrap_ci,
    channel_strength,
    cka_excess,
    iou_chance,
    mask_iou,
    mean_over,
    overlap_excess,
    weighted_iou_excess,
)
from channels.units import (
    align_units,
    localisation,
    mlp_unit_layout,
    permute_units,
    unit_keep_fraction,
)

CHANNELS, SUBCIRCUITS, INCONCLUSIVE, NOT_RUN = "channels", "subcircuits", "inconclusive", "not run"

GATE = 0.5             # dense channel strength (top-k share beyond flat): T1, T2 read only above it, T4 "channels" too
T1_MARGIN = 0.05       # |log effective rank| difference
T2_MARGIN = 0.05       # chance-corrected overlap difference
T2_KEPT = 0.5          # chance-corrected overlap with dense that counts as "the ticket keeps the channels"
T3_MARGIN = 0.5        # channel similarity beyond weight identity
T3_IDENTITY = 0.3      # weight identity (chance-corrected) that counts as "the tickets share weights"
T4_SUBCIRCUITS = 0.3   # localisation score above which channels sit on the kept units
T4_CHANNELS = 0.15     # localisation score below which channels ignore the kept units
ACC_MARGIN = 0.02      # accuracy equivalence band of T5 and T6
WEIGHTS = {"T1": 1, "T2": 1, "T3": 2, "T4": 2, "T5": 1, "T6": 2}  # discriminating tests count double
POSITIONAL = ("random_prune", "shuffle")

Activations = Callable[[RunData, "int | str"], dict[str, np.ndarray]]


@dataclass
class TestResult:
    """One test's outcome; `units` holds the per-seed statistic the interval is computed over."""

    test: str
    title: str
    statistic: str
    null: str
    rule: str
    effect: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    units: dict[str, float] = field(default_factory=dict)
    reading: str = NOT_RUN
    provisional: bool = False
    note: str = ""
    details: dict = field(default_factory=dict)

    def bounds(self) -> tuple[float, float]:
        """The interval the reading is decided on: the CI, or the point estimate with one seed."""
        return (self.effect, self.effect) if self.provisional else self.ci

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))


def _json_safe(obj):
    """NaN/inf -> None and tuples -> lists, so verdict.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _finish(result: TestResult, per_run: dict[RunData, float], n_boot: int) -> bool:
    """Average per seed, set effect, interval and provisional; False when nothing is usable."""
    by_seed: dict[int, list[float]] = {}
    for run, value in per_run.items():
        if np.isfinite(value):
            by_seed.setdefault(run.seed, []).append(value)
    result.units = {f"seed {s}": float(np.mean(v)) for s, v in sorted(by_seed.items())}
    if not result.units:
        result.reading, result.note = INCONCLUSIVE, result.note or "no run had the data this test needs"
        return False
    values = list(result.units.values())
    result.effect = float(np.mean(values))
    result.ci = bootstrap_ci(values, n_boot=n_boot)
    result.provisional = len(values) < 2
    if result.provisional:
        result.note = (result.note + " " if result.note else "") + "one seed: no interval, provisional reading"
    return True


def _sparsest(run: RunData, branches: Sequence[str], need_spectra: bool = False) -> int | None:
    """The highest pruned level where the ticket and at least one of `branches` are finished."""
    levels = [lvl for lvl in run.levels if lvl >= 1 and any(lvl in run.line(b) for b in branches)]
    if need_spectra:
        levels = [lvl for lvl in levels if run.levels[lvl].spectra is not None
                  and any(lvl in run.line(b) and run.line(b)[lvl].spectra is not None for b in branches)]
    return max(levels) if levels else None


def _controls(run: RunData) -> list[str]:
    """Branches that are controls of the ticket line (the rotated IMP line is a line of its own,
    the instability branch a second copy of the ticket)."""
    return [b for b in run.branches if b not in ("rotated", "instability")]


def dense_strength(runs: Sequence[RunData]) -> float:
    """Mean channel strength of the dense networks' spectra (the gate for reading "channels")."""
    values = []
    for run in runs:
        spectra = run.dense.spectra
        if spectra is not None:
            values += [channel_strength(final_eigenvalues(spectra, key), run.top_k) for key in spectrum_keys(spectra)]
    return float(np.mean(values)) if values else math.nan


def channel_shape(top1: float, ratio: float) -> str:
    """'one big channel' (top-1 share >= 0.5), 'a few channels' (participation ratio < 3), else
    'many medium channels' (the many-modules picture)."""
    if top1 >= 0.5:
        return "one big channel"
    return "a few channels" if ratio < 3 else "many medium channels"


def _log_rank(eigs) -> float:
    rank = entropy_effective_rank(eigs)
    return math.log(rank) if rank > 0 else math.nan


def t1_spectral_signature(runs: Sequence[RunData], n_boot: int = 2000) -> TestResult:
    """T1 spectral signature: does the ticket keep the dense network's number of channels?

    Each spectrum (covariance per site, Jacobian Gram per pair; final eigenvalues) is summarised
    by its entropy effective rank ER = exp(-sum p_i log p_i), participation ratio and top-1 share,
    and read as one big channel (top-1 share >= 0.5), a few channels (participation ratio < 3)
    or many medium channels. Statistic per seed, at the sparsest level with a random_prune control:
    drift(random_prune) - drift(ticket), drift(x) = mean over spectra |log ER_x - log ER_dense|.
    Null: 0 (ticket and random-pruned net of equal sparsity drift alike).
    Reading, when the dense channel strength is >= 0.5 (there are channels to keep): channels if
    the interval's low end > 0.05; subcircuits if the high end < -0.05 (the ticket's spectrum
    reorganises more than a random prune's); inconclusive otherwise. A necessary condition for
    channels (weight 1).
    """
    result = TestResult(
        "T1", "spectral signature per level",
        "drift(random_prune) - drift(ticket); drift = mean |log ER - log ER_dense| over spectra",
        "0: the ticket and a random-pruned net of equal sparsity drift alike",
        f"if dense channel strength >= {GATE}: channels if CI low > {T1_MARGIN}, "
        f"subcircuits if CI high < -{T1_MARGIN}; else inconclusive")
    rows = _signature_rows(runs)
    result.details = {"signature": rows, "dense_strength": dense_strength(runs)}
    if not rows:
        result.note = "no spectra in these runs"
        return result
    result.details["shapes"] = _shape_story(rows)
    per_run = {}
    for run in runs:
        level = _sparsest(run, ["random_prune"], need_spectra=True)
        if level is None:
            continue
        dense, ticket, rand = run.dense.spectra, run.levels[level].spectra, run.branches["random_prune"][level].spectra
        drift = {}
        for name, spectra in (("ticket", ticket), ("random", rand)):
            drift[name] = np.nanmean([abs(_log_rank(final_eigenvalues(spectra, k))
                                          - _log_rank(final_eigenvalues(dense, k))) for k in spectrum_keys(dense)])
        per_run[run] = float(drift["random"] - drift["ticket"])
    if not per_run:
        result.reading, result.note = NOT_RUN, "no random_prune control with spectra"
        return result
    if _finish(result, per_run, n_boot):
        lo, hi = result.bounds()
        gate = result.details["dense_strength"] >= GATE
        if gate and lo > T1_MARGIN:
            result.reading = CHANNELS
        elif gate and hi < -T1_MARGIN:
            result.reading = SUBCIRCUITS
        else:
            result.reading = INCONCLUSIVE
    return result


def _signature_rows(runs: Sequence[RunData]) -> list[dict]:
    """Per level, line and spectrum: mean ER, participation ratio, top-1 share over runs, and the shape."""
    groups: dict[tuple, list[tuple[float, np.ndarray]]] = {}
    for run in runs:
        for line in [None, *_controls(run)]:
            for level, job in run.line(line).items():
                if job.spectra is None:
                    continue
                for key in spectrum_keys(job.spectra):
                    groups.setdefault((level, line or "ticket", key), []).append(
                        (job.density, final_eigenvalues(job.spectra, key)))
    rows = []
    for (level, line, key), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ticket", kv[0][1:])):
        eigs = [e for _, e in items]
        top1 = float(np.mean([top_share(e, 1) for e in eigs]))
        ratio = float(np.mean([participation_ratio(e) for e in eigs]))
        rows.append({"level": level, "density": float(np.mean([d for d, _ in items])), "line": line, "spectrum": key,
                     "effective_rank": float(np.mean([entropy_effective_rank(e) for e in eigs])),
                     "participation_ratio": ratio, "top1_share": top1, "shape": channel_shape(top1, ratio),
                     "n": len(items)})
    return rows


def _shape_story(rows: list[dict]) -> list[str]:
    """Per spectrum, the dense network's shape and the sparsest ticket's: the one-big versus
    many-medium channels reading, made explicit."""
    story = []
    for key in sorted({r["spectrum"] for r in rows}):
        line = [r for r in rows if r["spectrum"] == key and r["line"] == "ticket"]
        dense, sparse = line[0], line[-1]
        story.append(f"{key}: dense {dense['shape']} (PR {dense['participation_ratio']:.1f}, top-1 "
                     f"{dense['top1_share']:.0%}); ticket at {sparse['density']:.0%} {sparse['shape']} "
                     f"(PR {sparse['participation_ratio']:.1f}, top-1 {sparse['top1_share']:.0%})")
    return story


def t2_channel_preservation(runs: Sequence[RunData], n_boot: int = 2000) -> TestResult:
    """T2 channel preservation: does the ticket keep the dense network's channel directions?

    Overlap = chance-corrected subspace overlap (mean squared cosine of principal angles, excess
    over k/d) of the final top-k eigenvectors with the dense network's, unit-aligned (same init).
    Statistic per seed, at the sparsest level with a random_prune control, mean over spectra:
    overlap(ticket, dense) - overlap(random_prune, dense). Null: 0 (random pruning of equal
    sparsity keeps the channels as well). Reading, when the dense channel strength is >= 0.5:
    channels if the interval's low end > 0.05 and the ticket's overlap >= 0.5; subcircuits if the
    high end < 0.05 and the ticket's overlap < 0.5 (it does not keep the dense channels, and no
    better than random pruning); inconclusive otherwise. A necessary condition for channels
    (weight 1).
    """
    result = TestResult(
        "T2", "channel preservation",
        "overlap(ticket, dense) - overlap(random_prune, dense); chance-corrected top-k subspace overlap",
        "0: a random-pruned net of equal sparsity keeps the dense channels as well",
        f"if dense channel strength >= {GATE}: channels if CI low > {T2_MARGIN} and ticket overlap >= {T2_KEPT}, "
        f"subcircuits if CI high < {T2_MARGIN} and ticket overlap < {T2_KEPT}; else inconclusive")
    rows: dict[tuple, list[float]] = {}
    per_run, kept = {}, []
    for run in runs:
        dense = run.dense.spectra
        if dense is None:
            continue
        for line in [None, *_controls(run)]:
            for level, job in run.line(line).items():
                if job.spectra is None or (line is None and level == 0):
                    continue
                for key in spectrum_keys(dense):
                    value = overlap_excess(top_vectors(dense, key), top_vectors(job.spectra, key))
                    rows.setdefault((level, line or "ticket", key), []).append(value)
        level = _sparsest(run, ["random_prune"], need_spectra=True)
        if level is None:
            continue
        ticket, rand = run.levels[level].spectra, run.branches["random_prune"][level].spectra
        t = [overlap_excess(top_vectors(dense, k), top_vectors(ticket, k)) for k in spectrum_keys(dense)]
        r = [overlap_excess(top_vectors(dense, k), top_vectors(rand, k)) for k in spectrum_keys(dense)]
        per_run[run] = float(np.mean(t) - np.mean(r))
        kept.append(float(np.mean(t)))
    ordered = sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ticket", kv[0][1:]))
    result.details = {
        "overlap_with_dense": [{"level": lvl, "line": line, "spectrum": key, "overlap_excess": float(np.mean(v)),
                                "n": len(v)} for (lvl, line, key), v in ordered],
        "dense_strength": dense_strength(runs),
        "ticket_overlap": float(np.mean(kept)) if kept else math.nan,
    }
    if not per_run:
        result.note = "no random_prune control with spectra"
        return result
    if _finish(result, per_run, n_boot):
        lo, hi = result.bounds()
        ticket, gate = result.details["ticket_overlap"], result.details["dense_strength"] >= GATE
        if gate and lo > T2_MARGIN and ticket >= T2_KEPT:
            result.reading = CHANNELS
        elif gate and hi < T2_MARGIN and ticket < T2_KEPT:
            result.reading = SUBCIRCUITS
        else:
            result.reading = INCONCLUSIVE
    return result


def _identity(a: Trained, b: Trained, b_weights: dict, b_mask: dict, generator: torch.Generator) -> tuple[float, dict]:
    """Weight identity of two tickets: mean over tensors of the chance-corrected weighted IoU of
    |w| * mask (where the tickets put their weight mass), plus each tensor's plain mask IoU."""
    per_tensor, plain = {}, {}
    for name, mask_a in a.mask.items():
        mass_a = a.weights[name].abs() * mask_a
        mass_b = b_weights[name].abs() * b_mask[name]
        per_tensor[name] = weighted_iou_excess(mass_a, mass_b, generator)
        plain[name] = {"iou": mask_iou(mask_a, b_mask[name]),
                       "chance": iou_chance(float(mask_a.float().mean()), float(b_mask[name].float().mean()))}
    return mean_over(per_tensor), {"weighted_iou_excess": per_tensor, "mask_iou": plain}


def _same_init_pair(a: RunData, b: RunData, level: int, generator: torch.Generator) -> dict | None:
    ta, tb = a.levels[level], b.levels[level]
    if ta.spectra is None or tb.spectra is None:
        return None
    identity, layers = _identity(ta, tb, tb.weights, tb.mask, generator)
    sims = {key: overlap_excess(top_vectors(ta.spectra, key), top_vectors(tb.spectra, key))
            for key in spectrum_keys(ta.spectra)}
    return {"kind": "same init", "measure": "unit-aligned subspace overlap", "identity": identity,
            "similarity": mean_over(sims), "per_spectrum": sims, **layers}


def _init_cka(a: RunData, b: RunData, activations: Activations) -> dict[str, float]:
    """Per site, the linear CKA of the two untrained networks (what architecture and inputs alone
    give), capped at 0.99 so that the excess stays defined."""
    init_a, init_b = activations(a, "init"), activations(b, "init")
    return {site: float(np.clip(cka_excess(init_a[site], init_b[site], 0.0), 0.0, 0.99))
            for site in init_a if site in init_b}


def _cross_init_pair(a: RunData, b: RunData, level: int, activations: Activations, baselines: dict[str, float],
                     generator: torch.Generator) -> dict | None:
    acts_a, acts_b = activations(a, level), activations(b, level)
    ta, tb = a.levels[level], b.levels[level]
    weights, mask, sims = dict(tb.weights), dict(tb.mask), {}
    for site in acts_a:
        layout = mlp_unit_layout(ta.mask.keys(), site)
        if site not in acts_b or site not in baselines or layout is None:
            continue
        perm = align_units(acts_a[site], acts_b[site])
        weights, mask = permute_units(weights, layout, perm), permute_units(mask, layout, perm)
        sims[site] = cka_excess(acts_a[site], acts_b[site], baselines[site])
    if not sims:
        return None
    identity, layers = _identity(ta, tb, weights, mask, generator)
    return {"kind": "different init", "measure": "linear CKA beyond the two inits' CKA; units matched",
            "identity": identity, "similarity": mean_over(sims), "per_spectrum": sims, **layers}


def _mean_trajectory(pairs: list[dict]) -> list[dict]:
    """Identity and similarity per level and pair kind, mean over pairs: level 0 shows what the
    data order (or the init) alone leaves shared when the masks are still identical (dense)."""
    groups: dict[tuple, list[dict]] = {}
    for pair in pairs:
        for step in pair["trajectory"]:
            groups.setdefault((pair["kind"], step["level"]), []).append(step)
    return [{"kind": kind, "level": level, **{m: float(np.mean([s[m] for s in steps]))
                                              for m in ("density", "identity", "similarity")}, "n": len(steps)}
            for (kind, level), steps in sorted(groups.items())]


def t3_identity_vs_subspace(runs: Sequence[RunData], activations: Activations | None = None,
                            n_boot: int = 2000) -> TestResult:
    """T3 identity versus subspace: do tickets of different seeds or data orders share weights, or channels?

    For every pair of runs, at each level both finished (the last, sparsest, decides; the
    trajectory from the dense level is reported): identity = mean over tensors of
    the chance-corrected weighted IoU of |w| * mask (plain per-layer mask IoU is reported beside
    it); similarity of channels = chance-corrected unit-aligned subspace overlap (same init:
    data-order variants) or, across inits (units matched by activations first), linear CKA beyond
    the CKA of the two untrained networks. Statistic per seed: mean over its pairs of
    similarity - identity. Channels predict high similarity with low identity; subcircuits predict
    similarity that tracks identity. Null: 0 (channels shared exactly as much as weights).
    Reading: channels if the interval's low end > 0.5 and the mean similarity >= 0.5; subcircuits
    if the high end < 0.5 and the mean identity >= 0.3 (the tickets share weights, and channels
    not much beyond that); inconclusive otherwise (e.g. nothing shared at all). Weight 2.
    """
    result = TestResult(
        "T3", "identity versus subspace across seeds",
        "channel similarity - weight identity over pairs of tickets (both chance-corrected)",
        "0: tickets share channels exactly as much as weights",
        f"channels if CI low > {T3_MARGIN} and similarity >= {T3_MARGIN}; subcircuits if CI high < {T3_MARGIN} "
        f"and identity >= {T3_IDENTITY}; else inconclusive")
    generator = torch.Generator().manual_seed(0)
    pairs, skipped = [], []
    for a, b in combinations(runs, 2):
        if (a.seed, a.data_order_seed) == (b.seed, b.data_order_seed) or set(a.dense.mask) != set(b.dense.mask):
            continue
        trajectory = []
        baselines = _init_cka(a, b, activations) if activations and a.seed != b.seed else {}
        for level in sorted(set(a.levels) & set(b.levels)):
            if a.seed == b.seed:
                found = _same_init_pair(a, b, level, generator)
            else:
                found = _cross_init_pair(a, b, level, activations, baselines, generator) if activations else None
            if found is None:
                break
            trajectory.append({"level": level, "density": a.levels[level].density, **found})
        if not trajectory or trajectory[-1]["level"] == 0:
            skipped.append(f"{a.name}~{b.name}")
            continue
        last = trajectory[-1]
        pairs.append({"a": a.name, "b": b.name, **last, "effect": last["similarity"] - last["identity"],
                      "trajectory": [{k: step[k] for k in ("level", "density", "identity", "similarity")}
                                     for step in trajectory], "_runs": (a, b)})
    per_run_values: dict[RunData, list[float]] = {}
    for pair in pairs:
        a, b = pair.pop("_runs")
        per_run_values.setdefault(a, []).append(pair["effect"])
        if b.seed != a.seed:
            per_run_values.setdefault(b, []).append(pair["effect"])
    result.details = {"pairs": pairs, "skipped": skipped, "trajectory": _mean_trajectory(pairs),
                      "identity": float(np.mean([p["identity"] for p in pairs])) if pairs else math.nan,
                      "similarity": float(np.mean([p["similarity"] for p in pairs])) if pairs else math.nan}
    if skipped:
        result.note = f"{len(skipped)} pair(s) without the data to compare"
    if not pairs:
        result.note = "needs two runs of one config: other seeds, or data orders of one seed"
        return result
    if _finish(result, {run: float(np.mean(v)) for run, v in per_run_values.items()}, n_boot):
        lo, hi = result.bounds()
        if lo > T3_MARGIN and result.details["similarity"] >= T3_MARGIN:
            result.reading = CHANNELS
        elif hi < T3_MARGIN and result.details["identity"] >= T3_IDENTITY:
            result.reading = SUBCIRCUITS
        else:
            result.reading = INCONCLUSIVE
    return result


def t4_localisation(runs: Sequence[RunData], n_boot: int = 2000) -> TestResult:
    """T4 localisation: do the dense network's top channels sit on the units the ticket keeps?

    u_j = fraction of unit j's weights (inputs and outputs) the ticket keeps; the dense network's
    top-k channels v_c (eigenvalue-weighted) put share = sum_c w_c sum_j v_jc^2 u_j of their mass
    there. Null: u permuted among the units (mean(u) exactly; p-value from 1000 draws).
    Statistic per seed, at the sparsest ticket level, mean over spectra whose site has a unit
    layout: score = (share - mean u) / (max u - mean u), 0 at chance, 1 fully localised.
    Reading: subcircuits if the interval's low end > 0.3; channels if the high end < 0.15 and the
    dense channel strength >= 0.5 (there are channels, and they ignore which units survive);
    inconclusive otherwise. Dense channels are used because a ticket's own channels avoid the
    units it has cut by construction. Weight 2.
    """
    result = TestResult(
        "T4", "localisation of channels on kept units",
        "(share - mean u) / (max u - mean u): dense top-k channel mass on the ticket's kept units",
        "0: units' kept fractions permuted at random",
        f"subcircuits if CI low > {T4_SUBCIRCUITS}; channels if CI high < {T4_CHANNELS} and dense channel "
        f"strength >= {GATE}; else inconclusive")
    rows: dict[tuple, list[dict]] = {}
    per_run = {}
    for run in runs:
        dense = run.dense.spectra
        if dense is None:
            continue
        top = max(run.levels)
        for level, job in run.levels.items():
            if level == 0:
                continue
            scores = []
            for key in spectrum_keys(dense):
                layout = mlp_unit_layout(job.mask.keys(), key_site(key))
                if layout is None:
                    continue
                vectors = top_vectors(dense, key)
                weights = final_eigenvalues(dense, key)[: vectors.shape[1]]
                found = localisation(vectors, weights, unit_keep_fraction(job.mask, layout))
                rows.setdefault((level, key), []).append({**found, "density": job.density})
                scores.append(found["score"])
            if level == top and scores:
                per_run[run] = float(np.nanmean(scores)) if np.isfinite(scores).any() else math.nan
    result.details = {
        "per_level": [{"level": lvl, "spectrum": key, "density": float(np.mean([r["density"] for r in v])),
                       **{m: float(np.nanmean([r[m] for r in v])) for m in ("share", "null_mean", "score", "p_value")},
                       "n": len(v)} for (lvl, key), v in sorted(rows.items())],
        "dense_strength": dense_strength(runs)}
    if not rows:
        result.note = "needs spectra at sites with a unit layout (MLP act.i)"
        return result
    if _finish(result, per_run, n_boot):
        lo, hi = result.bounds()
        if lo > T4_SUBCIRCUITS:
            result.reading = SUBCIRCUITS
        elif hi < T4_CHANNELS and result.details["dense_strength"] >= GATE:
            result.reading = CHANNELS
        else:
            result.reading = INCONCLUSIVE
    return result


def t5_controls(runs: Sequence[RunData], metric: str = "test/acc", n_boot: int = 2000) -> TestResult:
    """T5 the lottery-ticket controls: does it matter which positions the ticket keeps?

    Gap = ticket accuracy - control accuracy at equal per-layer sparsity, for random re-init,
    random prune and shuffle at each level. Statistic per seed, at the sparsest level with a
    positional control: ticket - mean(random_prune, shuffle) (those that ran). Null: 0 (any sparse
    net of this density does as well). Reading: subcircuits if the interval's low end > 0.02 (the
    particular positions matter); channels if the interval lies within [-0.02, 0.02] (any sparse
    net carries the function); inconclusive otherwise. Random re-init is reported, not read: both
    pictures allow initial values to matter. A necessary condition for subcircuits (weight 1).
    """
    result = TestResult(
        "T5", "LTH controls (accuracy gaps)",
        "test acc of ticket - mean(random_prune, shuffle) at the sparsest control level",
        "0: a random sparse net of equal per-layer sparsity does as well",
        f"subcircuits if CI low > {ACC_MARGIN}; channels if CI within [-{ACC_MARGIN}, {ACC_MARGIN}]; else inconclusive")
    rows: dict[tuple, list[float]] = {}
    per_run = {}
    for run in runs:
        for control in _controls(run):
            for level, job in run.branches[control].items():
                if level in run.levels:
                    gap = run.levels[level].test_metric(metric) - job.test_metric(metric)
                    rows.setdefault((level, control), []).append(gap)
        level = _sparsest(run, POSITIONAL)
        if level is not None:
            controls = [run.branches[b][level].test_metric(metric) for b in POSITIONAL if level in run.line(b)]
            per_run[run] = run.levels[level].test_metric(metric) - float(np.mean(controls))
    result.details = {"gaps": [{"level": lvl, "control": c, "gap": float(np.mean(v)), "min": float(np.min(v)),
                                "max": float(np.max(v)), "n": len(v)} for (lvl, c), v in sorted(rows.items())]}
    if not per_run:
        result.note = "no random_prune or shuffle control"
        return result
    if _finish(result, per_run, n_boot):
        _read_accuracy_gap(result)
    return result


def _read_accuracy_gap(result: TestResult) -> None:
    """The reading of an accuracy gap shared by T5 and T6: subcircuits if the interval's low end
    exceeds ACC_MARGIN, channels if it lies within +-ACC_MARGIN, inconclusive otherwise."""
    lo, hi = result.bounds()
    if lo > ACC_MARGIN:
        result.reading = SUBCIRCUITS
    elif lo >= -ACC_MARGIN and hi <= ACC_MARGIN:
        result.reading = CHANNELS
    else:
        result.reading = INCONCLUSIVE


def t6_rotation(runs: Sequence[RunData], metric: str = "test/acc", n_boot: int = 2000) -> TestResult:
    """T6 rotation: do tickets found in a randomly rotated basis work as well?

    The `rotated` line runs IMP on the same network after a random orthogonal change of basis
    folded into the weights (same function). Magnitude pruning depends on the basis: subcircuits
    living in a privileged basis are lost by the rotation, basis-free channels are not.
    Statistic per seed, at the sparsest level both lines finished, as a difference in differences
    (the optimiser is not rotation invariant, so the dense gap is subtracted):
    (ticket - rotated ticket) - (dense - rotated dense) in test accuracy. Null: 0.
    Reading: subcircuits if the interval's low end > 0.02; channels if it lies within
    [-0.02, 0.02]; inconclusive otherwise; not run without a rotated line. Weight 2.
    """
    result = TestResult(
        "T6", "rotation of the residual basis",
        "(ticket - rotated ticket) - (dense - rotated dense), test acc at the sparsest common level",
        "0: the basis does not matter",
        f"subcircuits if CI low > {ACC_MARGIN}; channels if CI within [-{ACC_MARGIN}, {ACC_MARGIN}]; else inconclusive")
    rows: dict[int, list[float]] = {}
    per_run = {}
    for run in runs:
        rotated = run.branches.get("rotated", {})
        common = sorted(set(rotated) & set(run.levels))
        if 0 not in common or len(common) < 2:
            continue
        base = run.levels[0].test_metric(metric) - rotated[0].test_metric(metric)
        for level in common:
            gap = run.levels[level].test_metric(metric) - rotated[level].test_metric(metric)
            rows.setdefault(level, []).append(gap)
        per_run[run] = run.levels[common[-1]].test_metric(metric) - rotated[common[-1]].test_metric(metric) - base
    result.details = {"gaps": [{"level": lvl, "gap": float(np.mean(v)), "n": len(v)}
                               for lvl, v in sorted(rows.items())]}
    if not per_run:
        result.note = "no rotated IMP line (imp.rotation: true, GPT-2 models)"
        return result
    if _finish(result, per_run, n_boot):
        _read_accuracy_gap(result)
    return result


VERDICT_RULE = (
    "each test votes +1 (channels), -1 (subcircuits) or 0 (inconclusive), weighted 2 for the "
    "discriminating tests T3, T4, T6 and 1 for T1, T2, T5; tests not run do not vote. "
    "score = sum(weight * vote) / sum(weight). channels if score >= 1/3 and a discriminating test "
    "reads channels; subcircuits if score <= -1/3 and a discriminating test reads subcircuits; "
    "otherwise inconclusive")


def verdict(results: Sequence[TestResult]) -> dict:
    """Combine the readings into one verdict (rule: `VERDICT_RULE`)."""
    votes = {CHANNELS: 1, SUBCIRCUITS: -1, INCONCLUSIVE: 0}
    voting = [r for r in results if r.reading in votes]
    total = sum(WEIGHTS[r.test] for r in voting)
    score = sum(WEIGHTS[r.test] * votes[r.reading] for r in voting) / total if total else 0.0
    decisive = {r.reading for r in voting if WEIGHTS[r.test] == 2}
    if score >= 1 / 3 and CHANNELS in decisive:
        overall = CHANNELS
    elif score <= -1 / 3 and SUBCIRCUITS in decisive:
        overall = SUBCIRCUITS
    else:
        overall = INCONCLUSIVE
    return {"verdict": overall, "score": score, "rule": VERDICT_RULE,
            "provisional": any(r.provisional for r in voting),
            "tests": {r.test: r.to_dict() for r in results}}


def run_tests(runs: Sequence[RunData], activations: Activations | None = None, n_boot: int = 2000) -> list[TestResult]:
    """T1..T6 on the same runs, in order."""
    return [t1_spectral_signature(runs, n_boot), t2_channel_preservation(runs, n_boot),
            t3_identity_vs_subspace(runs, activations, n_boot), t4_localisation(runs, n_boot),
            t5_controls(runs, n_boot=n_boot), t6_rotation(runs, n_boot=n_boot)]
