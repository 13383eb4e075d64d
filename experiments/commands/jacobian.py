"""`ltc jacobian`: residual-stream Jacobian spectra of a transformer over many tokens, beside the covariance.

    ltc jacobian --config configs/gpt2_residual_jacobian.yaml [--model gpt2] [--text PATH]
                 [--method exact|sketch] [--sketch_size 64] [--lens_layers true]
                 [--context_length 1024] [--contexts 4] [--targets 4] [--limit 2]
                 [--device cuda] [--shard 0/2] [--out DIR] [--wandb.mode offline|disabled]
    ltc jacobian --checkpoints runs/gpt_text [--twins '[permuted]'] [--out DIR] [...]

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

Across training: `--checkpoints DIR` (an `ltc lm` directory, or any folder of `step-NNNNNN`
save_pretrained models) measures every checkpoint and the randomised twins of the last one
(`--twins`; the step-0 checkpoint is the init) the same way, each in `<out>/<label>/`, on DIR's
held-out text unless --text is given, then draws every quantity against the training step and
writes the answer with intervals (training.json, answer.md; see experiments.founding.training).
W&B: one run per checkpoint in one group, logged against `training_step`.

Sharding: `--shard I/N` (or torch.distributed's RANK / WORLD_SIZE, and LOCAL_RANK picks the
GPU) runs one of N processes; each computes its share and the last one to finish writes the
results (run any shard again to rewrite them).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from channels.sweep.plan import SweepSettings
from experiments.config import base_parser, parse
from experiments.founding.measure import measure_model, settings_of
from experiments.founding.training import TWIN_KINDS, measure_training
from experiments.settings import WandbConfig, check_wandb_credentials
from lth.errors import LTCError

DEFAULT_PAIR = "resid_pre.0->resid_post.-1"


def build_parser() -> ArgumentParser:
    parser = base_parser("ltc jacobian", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "--model", type=str, default="gpt2", help="Hugging Face hub name or local directory"
    )
    parser.add_argument(
        "--checkpoints", type=str | None, default=None,
        help="a folder of checkpoints (`ltc lm` --out, or step-NNNNNN model folders): measure every one, "
             "and the twins, into --out; the series against the training step",
    )
    parser.add_argument(
        "--twins", type=list[str], default=list(TWIN_KINDS),
        help=f"randomised twins measured with --checkpoints: any of {', '.join(TWIN_KINDS)}",
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


def main(argv: list[str]) -> int:
    os.environ.setdefault("WANDB_SILENT", "true")
    parser = build_parser()
    args = parse(parser, argv)
    settings_of(args)
    wandb_cfg = WandbConfig(**vars(args.wandb))
    if wandb_cfg.resolved_mode() == "online":
        check_wandb_credentials()
    shard = shard_of(args.shard)
    if args.top_k < 1:
        raise LTCError(f"top_k must be >= 1, got {args.top_k}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = device_of(args.device)
    config_text = parser.dump(args, skip_none=False)
    if args.checkpoints is not None:
        measure_training(args, Path(args.checkpoints), config_text, device, shard)
    else:
        measure_model(args, args.model, args.text, args.out and Path(args.out), config_text, device, shard)
    return 0
