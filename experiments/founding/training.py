"""`ltc jacobian --checkpoints DIR`: the founding measurement on every checkpoint of a training and on
its randomised twins, the same way, and the series against the training step.

Models: every `step-NNNNNN` folder of DIR (an `ltc lm` directory, or any folder of
`save_pretrained` models named so), in step order (step 0 is the `init` twin: the same network
untrained), and the `permuted` twin of the last checkpoint (`experiments.founding.twins`). Each is
measured by `experiments.founding.measure.measure_model` into `<out>/<label>/` with the same
settings and text (default: DIR's `heldout.txt`, the text the model never trained on), each
resumable; its W&B run joins one group with the training step as its x axis.

Then, per pair: the series (`series`), one figure per quantity against the training step
(`experiments.report.jacobian_training`), and the answer (`answer`): the participation ratio per
offset t - s with its bootstrap interval and its reading (one big channel / many medium channels /
nearly full rank), and each Jacobian-versus-covariance comparison's `agree` or `disagree` against
its null, for the trained model, the init and the permuted twin. Written to `training.json` and
`answer.md` under `<out>` (`lth.layout.TrainingSweepLayout`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from jsonargparse import Namespace

from channels.agreement import reading
from channels.spectra import load_npz
from channels.sweep.intervals import channel_reading
from experiments.founding.measure import WandbRun, measure_model
from experiments.founding.twins import save_permuted_twin
from experiments.runtime import console
from lth import rundir
from lth.errors import LTCError
from lth.layout import MODEL_CONFIG, LMLayout, TrainingSweepLayout, parse_step, step_name

TWIN_KINDS = ("permuted",)
COMPARISONS = {  # label -> (summary group, key, prefix)
    "sensitivity Gram vs Cov(a)": ("jacobian_vs_covariance", "in/all", "sensitivity/"),
    "whitened Gram vs Cov(a)": ("jacobian_vs_covariance", "in/all", "whitened/"),
    "Cov(b) vs propagated, s = t": ("propagation", "self", ""),
    "Cov(b) vs propagated, all s": ("propagation", "all", ""),
}
SHOWN_BINS = 4  # distance bins in the answer: t - s = 0, 1, 2, 3-4


@dataclass(frozen=True)
class Model:
    """One measured network: its label (directory), folder, training step and kind."""

    label: str
    path: str
    step: int
    kind: str  # trained (a checkpoint; step 0 is the init) or a twin kind


def checkpoints(folder: Path) -> list[Model]:
    """The checkpoints of `folder`: `ltc lm`'s finished ones, else any `step-NNNNNN` model folder."""
    found = LMLayout(folder).checkpoints()
    if not found and folder.is_dir():
        found = {parse_step(p.name): p for p in folder.iterdir() if (p / MODEL_CONFIG).is_file()}
        found = {k: found[k] for k in sorted(s for s in found if s is not None)}
    if not found:
        raise LTCError(f"{folder} holds no checkpoints (step-NNNNNN folders written by `ltc lm` or save_pretrained): "
                       "train with `ltc lm --out DIR` first, or pass --model for one model")
    return [Model(step_name(step), str(path), step, "trained") for step, path in found.items()]


def models_of(folder: Path, layout: TrainingSweepLayout, twins: list[str], seed: int) -> list[Model]:
    """The checkpoints, then the twins of the last one (built on first use)."""
    unknown = [t for t in twins if t not in TWIN_KINDS]
    if unknown:
        raise LTCError(f"unknown twin {unknown[0]!r}: choose from {', '.join(TWIN_KINDS)} (the init is step 0)")
    models = checkpoints(folder)
    final = models[-1]
    if "permuted" in twins:
        path = save_permuted_twin(Path(final.path), layout.twin("permuted"), seed)
        models.append(Model("twin-permuted", str(path), final.step, "permuted"))
    return models


def measure_training(args: Namespace, folder: Path, config_text: str, device: str, shard: tuple[int, int]) -> dict:
    """Measure every model of `folder` (and the twins), then write the series, figures and answer."""
    from experiments.report.jacobian_training import training_figures

    if shard != (0, 1):
        raise LTCError("--checkpoints runs in one process: shard the sweep of one model with --model and --shard")
    layout = TrainingSweepLayout(Path(args.out) if args.out else Path("runs") / f"jacobian-{folder.name}-training")
    models = models_of(folder, layout, args.twins, args.seed)
    text = args.text
    if text is None and args.dataset is None and LMLayout(folder).heldout.is_file():
        text = str(LMLayout(folder).heldout)
    console.print(f"{len(models)} models ({', '.join(m.label for m in models)}) on {text or 'pydoc topics'}; out "
                  f"{layout.root}")
    for model in models:
        console.rule(f"{model.label} ({model.kind}, step {model.step})")
        measure_model(args, model.path, text, layout.sweep(model.label).root, config_text, device, shard,
                      WandbRun(group=layout.root.name, name=model.label, training_step=model.step, kind=model.kind),
                      layout.wandb)
    data = series(layout, models)
    data["answer"] = answer(data)
    data["figures"] = [str(p) for p in training_figures(data, layout)]
    rundir.write_json(layout.training_json, data)
    lines = answer_lines(data)
    rundir.write_text(layout.answer, "\n".join(lines) + "\n")
    console.rule("across training")
    for line in lines:
        console.print(line)
    console.print(f"wrote {layout.training_json}, {layout.answer} and {len(data['figures'])} figures under "
                  f"{layout.figures}")
    return data


def _scalar(values: dict, key: str) -> float:
    value = values.get(key, float("nan"))
    return float(value) if isinstance(value, (int, float)) else float("nan")


def series(layout: TrainingSweepLayout, models: list[Model]) -> dict:
    """Per model and pair, the numbers drawn against the training step (JSON-ready)."""
    out = {"models": [asdict(m) for m in models], "pairs": {}}
    for model in models:
        sweep = layout.sweep(model.label)
        summary = json.loads(sweep.results_json.read_text())
        arrays = load_npz(sweep.results_npz)
        out.setdefault("width", summary.get("width"))
        for pair, entry in summary["pairs"].items():
            slug = pair.replace("->", "__")
            row = {"label": model.label, "step": model.step, "kind": model.kind,
                   "intervals": entry["intervals"], "founding": {}, "comparisons": {}}
            for name, values in entry["founding"].items():
                spectrum = arrays[f"{slug}/founding/{name}"]
                at = arrays[f"{slug}/founding/{name}/at"]
                first = int(np.lexsort((-at[:, 1], at[:, 0]))[0])
                row["founding"][name] = {"sigma": spectrum[first].astype(float).tolist(),
                                         **{k: _scalar(values, k) for k in ("effective_rank", "participation_ratio",
                                                                            "sigma_max", "top1_share")}}
            for label, (group, key, prefix) in COMPARISONS.items():
                found = entry.get(group, {}).get(key)
                if found is None:
                    continue
                row["comparisons"][label] = {
                    k: _scalar(found, prefix + k)
                    for k in ("matrix_cosine", "matrix_cosine_null_q95", "matrix_cosine_p", "topk_overlap",
                              "topk_overlap_chance", "relative_frobenius_scaled", "agrees")
                }
            if "lens" in entry:
                row["lens"] = {"sigma": arrays[f"{slug}/lens/singular_values"].astype(float).tolist(),
                               **{k: _scalar(entry["lens"], k) for k in ("participation_ratio", "effective_rank",
                                                                         "sigma_max")}}
            out["pairs"].setdefault(pair, []).append(row)
    return out


def answer(data: dict) -> dict:
    """For the trained model (last checkpoint), the init (step 0) and each twin: per pair, the
    participation ratio per offset with its interval and reading, and every comparison's reading."""
    width = data.get("width") or 0
    out = {}
    for pair, rows in data["pairs"].items():
        trained = [r for r in rows if r["kind"] == "trained"]
        chosen = {"trained": trained[-1], **({"init": trained[0]} if trained[0]["step"] == 0 else {})}
        chosen |= {r["kind"]: r for r in rows if r["kind"] != "trained"}
        entry = {}
        for name, row in chosen.items():
            offsets = row["intervals"]["participation_ratio"][:SHOWN_BINS]
            entry[name] = {
                "label": row["label"],
                "step": row["step"],
                "participation_ratio": [{**o, "reading": channel_reading(o["lo"], o["hi"], width)} for o in offsets],
                "comparisons": {label: reading(c) for label, c in row["comparisons"].items()},
            }
        out[pair] = entry
    return out


def _offsets(row: dict) -> str:
    return "; ".join(f"t - s {'%d' % o['distance'][0] if o['distance'][0] == o['distance'][1] else '%d-%d' % tuple(o['distance'])}"
                     f": {o['median']:.1f} [{o['lo']:.1f}, {o['hi']:.1f}]" for o in row["participation_ratio"])


def answer_lines(data: dict) -> list[str]:
    """The answer as Markdown lines: one block per pair, one line per model, then the comparisons."""
    width = data.get("width")
    lines = ["# The founding measurement across training", ""]
    for pair, entry in data["answer"].items():
        lines += [f"## {pair} (width {width})", "",
                  "Participation ratio of J(t, s) by offset: median over blocks [95% bootstrap interval over "
                  "contexts and targets]; reading at s = t.", ""]
        for name, row in entry.items():
            lines.append(f"- **{name}** ({row['label']}): {_offsets(row)}; s = t reads "
                         f"**{row['participation_ratio'][0]['reading']}**")
        lines += ["", "Jacobian versus covariance (`agree`: matrix cosine beats its rotation null and the top-k "
                      "subspaces overlap):", ""]
        labels = list(dict.fromkeys(k for row in entry.values() for k in row["comparisons"]))
        lines.append("| comparison | " + " | ".join(entry) + " |")
        lines.append("|---|" + "---|" * len(entry))
        for label in labels:
            lines.append(f"| {label} | " + " | ".join(row["comparisons"].get(label, "-") for row in entry.values()) + " |")
        lines.append("")
    return lines
