"""`ltc jacobian`: residual-stream Jacobian spectra of a transformer over many tokens, beside the covariance.

    ltc jacobian --config configs/gpt2_residual_jacobian.yaml [--model gpt2] [--text PATH]
                 [--context_length 1024] [--contexts 4] [--targets 4] [--limit 2]
                 [--device cuda] [--shard 0/2] [--out DIR] [--wandb.mode offline|disabled]

For each pair a->b (default `resid_pre.0->resid_post.<last>`), J(t, s) = d b[t] / d a[s] for
every source s of `targets` target positions t in each of `contexts` token contexts: singular
values and spectral metrics per (context, t, s), the expected Grams, the covariance at the
same sites, and the comparison of both. Writes to `--out` (default
runs/jacobian-<model>-<hash8>, the hash of what is measured, not of how much): figures/*.png,
results.json, results.npz, items/ and state/ (see channels.sweep), and a W&B run
under wandb/ (offline by default). Interrupted sweeps resume where they stopped; running again
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
from rich.console import Console

from channels.sweep import METRICS, Pair, Sweep, SweepSettings, parse_pair
from channels.sweep_results import collect
from experiments.config import base_parser, parse
from experiments.data.corpus import read_documents, token_blocks
from experiments.models.hf import load_model, model_slug, normalise_site
from experiments.settings import WandbConfig
from lth import rundir
from lth.errors import LTCError
from lth.rundir import config_hash

console = Console(highlight=False, soft_wrap=True)
DEFAULT_PAIR = "resid_pre.0->resid_post.-1"


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


def prepare_out(out: Path, identity: dict, config_text: str) -> None:
    """Create the output directory, refusing one that holds a sweep of another identity."""
    stored = out / "sweep.json"
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
    rundir.write_text(out / "config.yaml", config_text)


def scalars(summary: dict) -> dict[str, float]:
    """The summary's numbers as flat W&B keys: jacobian/<pair>/..., spectra/<site>/cov/<metric>."""
    out = {}
    for pair, entry in summary["pairs"].items():
        for name, values in entry["founding"].items():
            out |= {
                f"jacobian/{pair}/founding/{name}/{k}": v
                for k, v in values.items()
                if isinstance(v, float)
            }
        for key, values in entry["gram"].items():
            out |= {f"jacobian/{pair}/gram/{key}/{k}": v for k, v in values.items()}
        for key, values in entry["jacobian_vs_covariance"].items():
            out |= {
                f"jacobian/{pair}/vs_cov/{key}/{k}": v
                for k, v in values.items()
                if not isinstance(v, str)
            }
    for site, values in summary["covariance"].items():
        out |= {f"spectra/{site}/cov/{k}": v for k, v in values.items()}
    return out


def log_wandb(
    out: Path, cfg: WandbConfig, summary: dict, figures: list[Path], config: dict
) -> None:
    """One W&B run (offline by default, files under out/wandb): scalars, distance table, figures."""
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
    columns = ["pair", "side", "distance_lo", "distance_hi", "n"] + [f"{m}/median" for m in METRICS]
    table = wandb.Table(columns=columns)
    for pair, entry in summary["pairs"].items():
        for row in entry["distance_bins"]:
            table.add_data(
                pair, row["side"], *row["distance"], row["n"], *(row[m]["median"] for m in METRICS)
            )
    images = {
        f"figures/{p.relative_to(out / 'figures').with_suffix('')}": wandb.Image(str(p))
        for p in figures
    }
    run.log({**scalars(summary), "jacobian/distance_bins": table, **images})
    run.finish()


def summary_lines(summary: dict) -> list[str]:
    lines = []
    for pair, entry in summary["pairs"].items():
        lines.append(
            f"{pair}: {entry['items']} (context, t) items, {entry['blocks']} blocks J(t, s), "
            f"{'causal' if entry['causal'] else 'non-causal'}"
        )
        for name, f in entry["founding"].items():
            lines.append(
                f"  founding {name:<15} (context {f['context']}, t {f['t']}): sigma_1 {f['sigma_max']:.3g}, "
                f"sigma_min {f['sigma_min']:.3g}, numerical rank {f['numerical_rank']:.0f}, "
                f"effective rank {f['effective_rank']:.1f}, top-1 share {f['top1_share']:.3f}"
            )
        for row in entry["distance_bins"]:
            if row["side"] == "s<=t" and row["distance"][0] in (0, 1, 2, 3, 9, 65, 513):
                lo, hi = row["distance"]
                lines.append(
                    f"  t - s in [{lo}, {hi}]: median effective rank {row['effective_rank']['median']:.1f}, "
                    f"numerical rank {row['numerical_rank']['median']:.0f}, "
                    f"||J||_F^2 {row['frobenius_sq']['median']:.3g} (n={row['n']})"
                )
        for key, c in entry["jacobian_vs_covariance"].items():
            lines.append(
                f"  Gram {key:<10} eff. rank {c['jac/effective_rank']:.1f} vs covariance at {c['site']} "
                f"{c['cov/effective_rank']:.1f}; top-{c['k']} overlap {c['topk_overlap']:.2f} "
                f"(chance {c['topk_overlap_chance']:.2f}), log-spectrum corr {c['log_spectrum_corr']:.2f}"
            )
    if "seconds_per_item" in summary:
        s = summary["seconds_per_item"]
        lines.append(
            f"time per (context, t) item: {s['total']:.2f} s (Jacobian {s['jacobian']:.2f}, "
            f"singular values {s['singular_values']:.2f}, Gram {s['gram']:.2f})"
        )
    return lines


def write_results(sweep: Sweep, args: Namespace, meta: dict) -> tuple[dict, list[Path]]:
    """results.json, results.npz and the figures of every finished item."""
    from channels.spectra import save_npz
    from experiments.report.jacobian_figures import all_figures

    summary, arrays = collect(sweep, args.top_k)
    summary = {**meta, **summary}
    save_npz(sweep.out / "results.npz", arrays)
    figures = all_figures(arrays, summary, sweep.pairs, sweep.sites, sweep.out / "figures")
    rundir.write_json(sweep.out / "results.json", summary)
    return summary, figures


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
        from experiments.environment import check_wandb_credentials

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
    documents = read_documents(args.text, args.dataset, args.dataset_split, args.dataset_column)
    length = min(args.context_length, loaded.max_positions or args.context_length)
    blocks = token_blocks(documents, loaded.encode, length, args.seed)
    identity = measured_identity(args, settings, loaded.tokenizer, pairs, blocks.shape[1])
    out = Path(
        args.out or Path("runs") / f"jacobian-{model_slug(args.model)}-{config_hash(identity)}"
    )
    sweep = Sweep(out, loaded.model, blocks, pairs, settings)
    prepare_out(out, identity, parser.dump(args, skip_none=False))
    console.print(
        f"{args.model} ({loaded.n_layers} blocks, width {loaded.width}, tokenizer {loaded.tokenizer}) "
        f"on {args.device}: {sweep.n_contexts} context(s) of {sweep.length} tokens out of {len(blocks)}, "
        f"{len(sweep.targets)} target(s) each, pairs {', '.join(p.name for p in pairs)}; out {out}"
    )
    sweep.run_shard(index, count, args.progress)
    items, contexts = sweep.missing()
    if items or contexts:
        console.print(
            f"shard {index}/{count} finished; {len(items)} item(s) and {len(contexts)} covariance "
            "context(s) of other shards remain: the last shard to finish writes the results"
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
    summary, figures = write_results(sweep, args, meta)
    log_wandb(out, wandb_cfg, summary, figures, {**identity, "shards": count})
    for line in summary_lines(summary):
        console.print(line)
    console.print(
        f"wrote {out / 'results.json'}, {out / 'results.npz'} and {len(figures)} figures under {out / 'figures'}"
    )
    return 0
