"""`ltc jacobian`: residual-stream Jacobian spectra of a transformer over many tokens, beside the covariance.

    ltc jacobian --config configs/gpt2_residual_jacobian.yaml [--model gpt2] [--text PATH]
                 [--method exact|sketch] [--sketch_size 64] [--lens_layers true]
                 [--context_length 1024] [--contexts 4] [--targets 4] [--limit 2]
                 [--device cuda] [--shard 0/2] [--out DIR] [--wandb.mode offline|disabled]

For each pair a->b (default `resid_pre.0->resid_post.<last>`), J(t, s) = d b[t] / d a[s] for
every source s of `targets` target positions t in each of `contexts` token contexts, exactly
or sketched (`--method`): spectral metrics per (context, t, s), the expected Grams, the
covariance at the same sites, their comparisons (channels.agreement), the Jacobian lens (the
token-averaged self block; `--lens_layers` adds resid_pre.l->last for every layer l) and the
block coupling across depth and tokens (channels.coupling). Writes to `--out` (default
runs/jacobian-<model>-<hash8>, the hash of what is measured, not of how much; names in
lth.layout.SweepLayout): figures/, results.json, results.npz, lens.safetensors, items/ and
state/, and a W&B run under wandb/ (offline by default). Interrupted sweeps resume where they stopped; running again
with more contexts or targets extends the sweep. Results cover every finished item in the
directory.

Sharding: `--shard I/N` (or torch.distributed's RANK / WORLD_SIZE, and LOCAL_RANK picks the
GPU) runs one of N processes; each computes its share and the last one to finish writes the
results (run any shard again to rewrite them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, Namespace

from channels.coupling import measure_coupling
from channels.metrics import METRIC_NAMES
from channels.sweep.run import Sweep
from channels.sweep.plan import Pair, SweepSettings, parse_pair, target_order
from channels.sweep.results import collect
from experiments.config import base_parser, parse
from experiments.data.corpus import read_documents, token_blocks
from experiments.models.hf import load_model, model_slug, normalise_site
from experiments.report.jacobian_summary import scalars, summary_lines
from experiments.runtime import console
from experiments.settings import WandbConfig, check_wandb_credentials
from lth import rundir
from lth.errors import LTCError
from lth.layout import SweepLayout
from lth.rundir import config_hash

DEFAULT_PAIR = "resid_pre.0->resid_post.-1"
SKETCH_IDENTITY = ("sketch_size", "sketch_topk", "sketch_topk_offsets", "krylov_block", "krylov_iters")


def build_parser() -> ArgumentParser:
    parser = base_parser("ltc jacobian", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "--model", type=str, default="gpt2", help="Hugging Face hub name or local directory"
    )
    parser.add_argument(
        "--text",
        type=str | None,
        default=None,
        help="a UTF-8 text file or a directory of them (default: Python's pydoc topics)",
    )
    parser.add_argument(
        "--dataset",
        type=str | None,
        default=None,
        help="a Hugging Face dataset NAME or NAME:CONFIG instead of --text (needs `datasets`)",
    )
    parser.add_argument("--dataset_split", type=str, default="train")
    parser.add_argument("--dataset_column", type=str, default="text")
    parser.add_argument(
        "--context_length",
        type=int,
        default=1024,
        help="tokens per context (clipped to the model's positions and to the text)",
    )
    parser.add_argument(
        "--pairs",
        type=list[str],
        default=[DEFAULT_PAIR],
        help="Jacobian pairs 'site_a->site_b' (sites: resid_pre.L, resid_post.L, mlp_hidden.L, attn_out.L)",
    )
    parser.add_class_arguments(SweepSettings, None)
    parser.add_argument(
        "--top_k", type=int, default=16, help="eigenvectors compared between Gram and covariance"
    )
    parser.add_argument(
        "--lens_layers", type=bool, default=False,
        help="add the pairs resid_pre.l->resid_post.<last> for every layer l (the Jacobian lens)",
    )
    parser.add_argument(
        "--coupling_targets", type=int, default=4, help="tokens of the block coupling (0: none)"
    )
    parser.add_argument(
        "--coupling_length", type=int, default=64, help="context prefix the coupling runs on"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the order of the contexts")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", type=str, default="float32", help="float32 or float64")
    parser.add_argument(
        "--threads", type=int | None, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--shard",
        type=str | None,
        default=None,
        help="I/N: this process's share of the sweep (default: RANK/WORLD_SIZE, else 0/1)",
    )
    parser.add_argument("--out", type=str | None, default=None, help="output directory")
    parser.add_argument("--progress", type=bool, default=True, help="show the progress bar")
    parser.add_class_arguments(WandbConfig, "wandb")
    return parser


def shard_of(spec: str | None) -> tuple[int, int]:
    """(I, N) from `I/N`, else from RANK / WORLD_SIZE, else (0, 1)."""
    if spec is None:
        spec = (
            f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
            if "WORLD_SIZE" in os.environ
            else "0/1"
        )
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise LTCError(f"shard {spec!r} is not of the form I/N (e.g. 0/4)") from None
    if not 0 <= index < count:
        raise LTCError(f"shard {spec!r}: need 0 <= I < N")
    return index, count


def device_of(name: str) -> str:
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LTCError(f"--device {name}: no CUDA device here; use --device cpu")
    if not name.startswith(("cpu", "cuda")):
        raise LTCError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return name


def prepare_out(layout: SweepLayout, identity: dict, config_text: str) -> None:
    """Create the output directory, refusing one that holds a sweep of another identity."""
    out, stored = layout.root, layout.identity
    if stored.is_file():
        previous = json.loads(stored.read_text())
        if previous != identity:
            changed = sorted(
                k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k)
            )
            raise LTCError(
                f"{out} holds a sweep of another setting ({', '.join(changed)} differ): "
                "pick another --out or delete it"
            )
    elif out.exists() and any(out.iterdir()):
        raise LTCError(f"{out} exists, is not empty and has no sweep.json: pick another --out")
    rundir.write_json(stored, identity)
    rundir.write_text(layout.config, config_text)


def log_wandb(
    layout: SweepLayout, cfg: WandbConfig, summary: dict, figures: list[Path], config: dict
) -> None:
    """One W&B run (offline by default, files under out/wandb): scalars, distance table, figures."""
    out = layout.root
    mode = cfg.resolved_mode()
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        dir=str(out),
        mode=mode,
        name=out.name,
        group=out.name,
        job_type="jacobian",
        tags=list(cfg.tags),
        config=config,
    )
    columns = ["pair", "side", "distance_lo", "distance_hi", "n"] + [f"{m}/median" for m in METRIC_NAMES]
    table = wandb.Table(columns=columns)
    for pair, entry in summary["pairs"].items():
        for row in entry["distance_bins"]:
            table.add_data(
                pair, row["side"], *row["distance"], row["n"], *(row[m]["median"] for m in METRIC_NAMES)
            )
    images = {
        f"figures/{p.relative_to(layout.figures).with_suffix('')}": wandb.Image(str(p))
        for p in figures
    }
    run.log({**scalars(summary), "jacobian/distance_bins": table, **images})
    run.finish()


def write_results(sweep: Sweep, args: Namespace, meta: dict, coupling: dict | None) -> tuple[dict, list[Path]]:
    """results.json, results.npz, lens.safetensors and the figures of every finished item."""
    from channels.spectra import save_npz
    from experiments.report.jacobian_figures import all_figures

    summary, arrays, lens = collect(sweep, args.top_k)
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
    return measure_coupling(sweep.model, ids, n_layers, targets, min(args.top_k, 8), sweep.chunk_size)


def measured_identity(
    args: Namespace, settings: SweepSettings, tokenizer: str, pairs: list[Pair], length: int
) -> dict:
    """What the numbers depend on: the output directory's hash and the check on re-runs (how much
    is swept, and where and how fast, are left out, so a sweep can be extended or moved)."""
    return {
        "model": args.model,
        "tokenizer": tokenizer,
        "text": args.text,
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
        **(
            {k: getattr(settings, k) for k in SKETCH_IDENTITY}
            if settings.method == "sketch"
            else {}
        ),
        "lens_skip_first": settings.lens_skip_first,
        "rtol": settings.rtol,
        "keep_singular_values": settings.keep_singular_values,
        "covariance_skip_first": settings.covariance_skip_first,
    }


def main(argv: list[str]) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    parser = build_parser()
    args = parse(parser, argv)
    settings = SweepSettings(**{key: args[key] for key in SweepSettings.__dataclass_fields__})
    settings.validate()
    wandb_cfg = WandbConfig(**vars(args.wandb))
    if wandb_cfg.resolved_mode() == "online":
        check_wandb_credentials()
    index, count = shard_of(args.shard)
    if args.top_k < 1:
        raise LTCError(f"top_k must be >= 1, got {args.top_k}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = [parse_pair(spec) for spec in args.pairs]
    loaded = load_model(args.model, device_of(args.device), args.dtype)
    pairs = [
        Pair(normalise_site(p.a, loaded.n_layers), normalise_site(p.b, loaded.n_layers))
        for p in pairs
    ]
    if args.lens_layers:
        last = f"resid_post.{loaded.n_layers - 1}"
        pairs += [Pair(f"resid_pre.{layer}", last) for layer in range(loaded.n_layers)]
        pairs = list(dict.fromkeys(pairs))
    documents = read_documents(args.text, args.dataset, args.dataset_split, args.dataset_column)
    length = min(args.context_length, loaded.max_positions or args.context_length)
    blocks = token_blocks(documents, loaded.encode, length, args.seed)
    identity = measured_identity(args, settings, loaded.tokenizer, pairs, blocks.shape[1])
    out = Path(
        args.out or Path("runs") / f"jacobian-{model_slug(args.model)}-{config_hash(identity)}"
    )
    sweep = Sweep(out, loaded.model, blocks, pairs, settings)
    prepare_out(sweep.layout, identity, parser.dump(args, skip_none=False))
    console.print(
        f"{args.model} ({loaded.n_layers} blocks, width {loaded.width}, tokenizer {loaded.tokenizer}) "
        f"on {args.device}: {sweep.n_contexts} context(s) of {sweep.length} tokens out of {len(blocks)}, "
        f"{len(sweep.targets)} target(s) each, pairs {', '.join(p.name for p in pairs)}; out {out}"
    )
    sweep.run_shard(index, count, args.progress)
    items = sweep.missing()
    if items:
        console.print(
            f"shard {index}/{count} finished; {len(items)} item(s) of other shards remain: "
            "the last shard to finish writes the results"
        )
        return 0
    meta = {
        "model": args.model,
        "tokenizer": loaded.tokenizer,
        "context_length": sweep.length,
        "contexts_available": len(blocks),
        "targets": sweep.targets,
        "device": args.device,
        "dtype": args.dtype,
    }
    summary, figures = write_results(sweep, args, meta, coupling_of(sweep, loaded.n_layers, args))
    log_wandb(sweep.layout, wandb_cfg, summary, figures, {**identity, "shards": count})
    for line in summary_lines(summary):
        console.print(line)
    console.print(
        f"wrote {sweep.layout.results_json}, {sweep.layout.results_npz} and {len(figures)} figures "
        f"under {sweep.layout.figures}"
    )
    return 0
