"""One model's `ltc jacobian`: load it, cut the text into contexts, run (or resume) the sweep, write
the results, the figures and the W&B run, print the summary.

`measure_model` is the whole command for one model; `ltc jacobian --checkpoints` calls it once per
checkpoint and twin (`experiments.founding.training`), each into its own directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import Namespace

from channels.coupling import measure_coupling
from channels.metrics import METRIC_NAMES
from channels.sweep.plan import Pair, SweepSettings, is_causal, parse_pair, target_order
from channels.sweep.results import collect
from channels.sweep.run import Sweep
from experiments.data.corpus import read_documents, token_blocks
from experiments.models.hf import load_model, model_slug, normalise_site
from experiments.report.jacobian_summary import scalars, summary_lines
from experiments.runtime import console
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.layout import SweepLayout
from lth.rundir import config_hash

SKETCH_IDENTITY = ("sketch_size", "sketch_probes", "sketch_pr_rel_se", "sketch_max_size", "sketch_topk", "sketch_topk_offsets",
                   "krylov_block", "krylov_iters", "krylov_tol")


@dataclass(frozen=True)
class WandbRun:
    """Where one sweep's W&B run goes: its group and name, and its place on a training axis."""

    group: str
    name: str
    training_step: int | None = None
    kind: str | None = None  # trained, permuted, ... (across training)


@dataclass
class Measured:
    """A finished sweep: its summary (results.json), figures and directory."""

    summary: dict
    figures: list[Path]
    layout: SweepLayout


def settings_of(args: Namespace) -> SweepSettings:
    settings = SweepSettings(**{key: args[key] for key in SweepSettings.__dataclass_fields__})
    settings.validate()
    return settings


def prepare_out(layout: SweepLayout, identity: dict, config_text: str) -> None:
    """Create the output directory, refusing one that holds a sweep of another identity."""
    out, stored = layout.root, layout.identity
    if stored.is_file():
        previous = json.loads(stored.read_text())
        if previous != identity:
            changed = sorted(k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k))
            raise LTCError(f"{out} holds a sweep of another setting ({', '.join(changed)} differ): "
                           "pick another --out or delete it")
    elif out.exists() and any(out.iterdir()):
        raise LTCError(f"{out} exists, is not empty and has no sweep.json: pick another --out")
    rundir.write_json(stored, identity)
    rundir.write_text(layout.config, config_text)


def measured_identity(args: Namespace, model: str, text: str | None, settings: SweepSettings, tokenizer: str,
                      pairs: list[Pair], length: int) -> dict:
    """What the numbers depend on: the output directory's hash and the check on re-runs (how much
    is swept, and where and how fast, are left out, so a sweep can be extended or moved)."""
    return {
        "model": model,
        "tokenizer": tokenizer,
        "text": text,
        "dataset": args.dataset,
        "dataset_split": args.dataset_split,
        "dataset_column": args.dataset_column,
        "context_length": length,
        "pairs": [p.name for p in pairs],
        "dtype": args.dtype,
        "seed": args.seed,
        "max_distance": settings.max_distance,
        "covariance_contexts": settings.covariance_contexts,
        "method": settings.method,
        **({k: getattr(settings, k) for k in SKETCH_IDENTITY} if settings.method == "sketch" else {}),
        "lens_skip_first": settings.lens_skip_first,
        "rtol": settings.rtol,
        "keep_singular_values": settings.keep_singular_values,
        "covariance_skip_first": settings.covariance_skip_first,
    }


def log_wandb(layout: SweepLayout, cfg: WandbConfig, summary: dict, figures: list[Path], config: dict,
              where: WandbRun, wandb_dir: Path) -> None:
    """One W&B run (offline by default, files under `wandb_dir`): scalars, distance table, figures.

    Across training (`where.training_step` set) every value is logged against `training_step`,
    so the group's runs line up on the training axis."""
    mode = cfg.resolved_mode()
    if mode == "disabled":
        return
    import wandb

    wandb_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=cfg.project, entity=cfg.entity, dir=str(wandb_dir), mode=mode, name=where.name,
                     group=where.group, job_type="jacobian", tags=list(cfg.tags),
                     config={**config, "training_step": where.training_step, "kind": where.kind})
    columns = ["pair", "side", "distance_lo", "distance_hi", "n"] + [f"{m}/median" for m in METRIC_NAMES]
    table = wandb.Table(columns=columns)
    for pair, entry in summary["pairs"].items():
        for row in entry["distance_bins"]:
            table.add_data(pair, row["side"], *row["distance"], row["n"], *(row[m]["median"] for m in METRIC_NAMES))
    images = {f"figures/{p.relative_to(layout.figures).with_suffix('')}": wandb.Image(str(p)) for p in figures}
    logged = {**scalars(summary), "jacobian/distance_bins": table, **images}
    if where.training_step is not None:
        run.define_metric("training_step")
        run.define_metric("*", step_metric="training_step")
        logged["training_step"] = where.training_step
    run.log(logged)
    run.finish()


def write_results(sweep: Sweep, top_k: int, meta: dict, coupling: dict | None) -> tuple[dict, list[Path]]:
    """results.json, results.npz, lens.safetensors and the figures of every finished item."""
    from channels.spectra import save_npz
    from experiments.report.jacobian_figures import all_figures

    summary, arrays, lens = collect(sweep, top_k)
    summary = {**meta, **summary}
    if coupling is not None:
        arrays |= {f"coupling/{k}": coupling[k] for k in ("depth", "tokens")}
        summary["coupling"] = {k: v for k, v in coupling.items() if k not in ("depth", "tokens")}
    layout = sweep.layout
    save_npz(layout.results_npz, arrays)
    if lens:
        rundir.save_tensors(layout.lens, lens)
    figures = all_figures(arrays, summary, sweep.pairs, sweep.sites, layout)
    rundir.write_json(layout.results_json, summary)
    return summary, figures


def coupling_of(sweep: Sweep, n_layers: int, args: Namespace) -> dict | None:
    """Block coupling on the first `coupling_length` tokens of context 0 (None when off)."""
    if args.coupling_targets < 1:
        return None
    length = min(args.coupling_length, sweep.length)
    skip = min(sweep.settings.lens_skip_first, length - 1)
    targets = sorted(t for t in target_order(length, length) if t >= skip)[-args.coupling_targets :]
    ids = sweep.blocks[0, :length].to(sweep.device)[None]
    causal = is_causal(sweep.model, ids, Pair("resid_pre.0", "resid_post.0"))
    return measure_coupling(sweep.model, ids, n_layers, targets, min(args.top_k, 8), sweep.chunk_size, causal)


def measure_model(args: Namespace, model: str, text: str | None, out: Path | None, config_text: str,
                  device: str, shard: tuple[int, int], where: WandbRun | None = None,
                  wandb_dir: Path | None = None) -> Measured | None:
    """The sweep of `model` on `text` into `out` (None: runs/jacobian-<model>-<hash8>), its results,
    figures and W&B run; None when other shards still have work (the last one writes the results)."""
    settings = settings_of(args)
    pairs = [parse_pair(spec) for spec in args.pairs]
    loaded = load_model(model, device, args.dtype)
    pairs = [Pair(normalise_site(p.a, loaded.n_layers), normalise_site(p.b, loaded.n_layers)) for p in pairs]
    if args.lens_layers:
        last = f"resid_post.{loaded.n_layers - 1}"
        pairs = list(dict.fromkeys(pairs + [Pair(f"resid_pre.{layer}", last) for layer in range(loaded.n_layers)]))
    documents = read_documents(text, args.dataset, args.dataset_split, args.dataset_column)
    length = min(args.context_length, loaded.max_positions or args.context_length)
    blocks = token_blocks(documents, loaded.encode, length, args.seed)
    identity = measured_identity(args, model, text, settings, loaded.tokenizer, pairs, blocks.shape[1])
    out = Path(out or Path("runs") / f"jacobian-{model_slug(model)}-{config_hash(identity)}")
    sweep = Sweep(out, loaded.model, blocks, pairs, settings)
    prepare_out(sweep.layout, identity, config_text)
    console.print(
        f"{model} ({loaded.n_layers} blocks, width {loaded.width}, tokenizer {loaded.tokenizer}) on {device}: "
        f"{sweep.n_contexts} context(s) of {sweep.length} tokens out of {len(blocks)}, {len(sweep.targets)} "
        f"target(s) each, pairs {', '.join(p.name for p in pairs)}; out {out}"
    )
    index, count = shard
    sweep.run_shard(index, count, args.progress)
    remaining = sweep.missing()
    if remaining:
        console.print(f"shard {index}/{count} finished; {len(remaining)} item(s) of other shards remain: "
                      "the last shard to finish writes the results")
        return None
    meta = {"model": model, "tokenizer": loaded.tokenizer, "context_length": sweep.length,
            "contexts_available": len(blocks), "targets": sweep.targets, "device": device, "dtype": args.dtype,
            "width": loaded.width, "n_layers": loaded.n_layers}
    summary, figures = write_results(sweep, args.top_k, meta, coupling_of(sweep, loaded.n_layers, args))
    wandb_cfg = WandbConfig(**vars(args.wandb))
    log_wandb(sweep.layout, wandb_cfg, summary, figures, {**identity, "shards": count},
              where or WandbRun(group=out.name, name=out.name), wandb_dir or sweep.layout.root)
    for line in summary_lines(summary):
        console.print(line)
    console.print(f"wrote {sweep.layout.results_json}, {sweep.layout.results_npz} and {len(figures)} figures "
                  f"under {sweep.layout.figures}")
    return Measured(summary, figures, sweep.layout)
