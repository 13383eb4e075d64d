"""`ltc lm`: train the small causal language model of the founding measurement, saving Hugging Face checkpoints.

    ltc lm --config configs/gpt_text_train.yaml [--out runs/gpt_text] [--schedule.steps 3000]
           [--threads 2] [--progress false]

A GPT-2 (`--net.*`) trained on the text (`--data.*`, Python's pydoc topics by default) with
`--optim.*` for `--schedule.steps` steps; checkpoints at log-spaced steps (0, 30, 100, 300, ...,
final) in `<out>/step-NNNNNN/`, loadable by `ltc jacobian --model <out>/step-NNNNNN` and measured
across training by `ltc jacobian --checkpoints <out>`. Running the same command again resumes
an interrupted training (exactly: same batches, same dropout); another recipe in the same --out
is refused. See experiments.founding.lm.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from jsonargparse import ArgumentParser, Namespace

from experiments.config import base_parser, parse
from experiments.founding.lm import LMData, LMNet, LMRecipe, LMSchedule, Trainer
from experiments.runtime import console, limit_cpu_threads
from experiments.tasks.base import OptimConfig
from lth import rundir
from lth.errors import LTCError
from lth.layout import LMLayout

RUN_ONLY = ("config", "out", "threads", "progress")


def build_parser() -> ArgumentParser:
    parser = base_parser("ltc lm", __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_class_arguments(LMNet, "net")
    parser.add_class_arguments(LMData, "data")
    parser.add_class_arguments(OptimConfig, "optim")
    parser.set_defaults({f"optim.{k}": v for k, v in asdict(LMRecipe().optim).items()})  # the recipe's, not Adam's
    parser.add_class_arguments(LMSchedule, "schedule")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init, the split and the data order")
    parser.add_argument("--out", type=str, default="runs/gpt_text", help="the training directory")
    parser.add_argument("--threads", type=int | None, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--progress", type=bool, default=True, help="show the progress bar")
    return parser


def recipe_of(args: Namespace) -> LMRecipe:
    try:
        return LMRecipe(net=LMNet(**vars(args.net)), data=LMData(**vars(args.data)),
                        optim=OptimConfig(**vars(args.optim)), schedule=LMSchedule(**vars(args.schedule)),
                        seed=args.seed)
    except TypeError as exc:
        raise LTCError(f"bad recipe: {exc}") from exc


def check_out(layout: LMLayout, identity: dict, config_text: str) -> None:
    """Refuse a directory trained with another recipe; record the recipe in a new one."""
    if layout.identity.is_file():
        stored = json.loads(layout.identity.read_text())
        if stored != identity:
            changed = sorted(k for k in identity.keys() | stored.keys() if identity.get(k) != stored.get(k))
            raise LTCError(f"{layout.root} holds a training of another recipe ({', '.join(changed)} differ): "
                           "pick another --out or delete it")
    elif layout.root.exists() and any(layout.root.iterdir()):
        raise LTCError(f"{layout.root} exists, is not empty and has no {layout.identity.name}: pick another --out")
    rundir.write_json(layout.identity, identity)
    rundir.write_text(layout.recipe, config_text)


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parse(parser, argv)
    recipe = recipe_of(args)
    recipe.validate()
    if args.threads:
        limit_cpu_threads(args.threads)
    layout = LMLayout(args.out)
    identity = {k: v for k, v in args.clone().as_dict().items() if k not in RUN_ONLY}
    check_out(layout, identity, parser.dump(args, skip_none=False))
    trainer = Trainer(recipe, layout.root)
    n = recipe.net
    console.print(
        f"GPT-2 {n.n_layer} x {n.n_embd} ({sum(p.numel() for p in trainer.task.net.parameters()):,} parameters), "
        f"BPE vocabulary {trainer.data.vocab_size}, {len(trainer.data.train_blocks)} training blocks of "
        f"{recipe.data.context_length} tokens; {recipe.schedule.steps} steps, checkpoints at "
        f"{recipe.schedule.checkpoints()}; out {layout.root}"
    )
    final = trainer.run(args.progress)
    console.print(
        f"step {final['step']}: validation loss {final['val_loss']:.3f} nats/token (accuracy {final['val_acc']:.3f}; "
        f"unigram baseline {trainer.unigram_loss():.3f}), training loss {final['train_loss']:.3f}, "
        f"{final['seconds'] / 60:.1f} min of training"
    )
    console.print(f"checkpoints: {', '.join(p.name for p in layout.checkpoints().values())} under {layout.root}")
    return 0
