"""Train a small causal language model on the embedded text, saving Hugging Face checkpoints.

The network is a GPT-2 built from a config (`experiments.models.gpt.gpt2`), trained by next-token
cross-entropy (`experiments.tasks.language.LanguageModelTask.token_sums`) on contiguous blocks of
the text (`experiments.data.text.TextDataModule`: Python's pydoc topics by default, a byte-level BPE
fitted on them, blocks split train / val / test by a seeded permutation) with AdamW and a cosine
schedule. After optimiser step k for every k in the checkpoint steps (default log-spaced: 0, 30,
100, 300, ..., the last step) the model is saved with `save_pretrained` beside its tokenizer, so
`ltc jacobian --model <dir>/step-000300` loads it as any Hugging Face model; `checkpoint.json`
(step, losses, seconds) is written last and marks the checkpoint finished.

Resume: the model, optimiser, scheduler, torch RNG (dropout) and step are saved at every checkpoint
and every `save_every_s` seconds; the data order is a function of (seed, step)
(`lth.data_order.StepBatchSampler`), so an interrupted training resumed by the same command follows
the uninterrupted one exactly. The held-out text (validation and test blocks, decoded) is written
to `heldout.txt`, what the measurements of the trained model read by default.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from experiments.data.text import TextDataModule
from experiments.models.gpt import gpt2
from experiments.models.hf import quiet_transformers
from experiments.runtime import console
from experiments.tasks.base import OptimConfig
from experiments.tasks.language import LanguageModelTask
from lth import rundir
from lth.data_order import StepBatchSampler
from lth.errors import LTCError
from lth.layout import LMLayout

EVAL_BATCH = 64


@dataclass
class LMNet:
    """The GPT-2 (vocab_size and n_positions come from the data).

    Args:
        n_layer: transformer blocks.
        n_head: attention heads per block.
        n_embd: residual width d.
        dropout: residual, embedding and attention dropout while training (off when measured).
        tie_word_embeddings: share the token embedding and the unembedding.
    """

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    tie_word_embeddings: bool = True


@dataclass
class LMData:
    """The text and its blocks.

    Args:
        text: a UTF-8 file or directory of them; null: Python's pydoc topics (no download).
        vocab_size: size of the byte-level BPE fitted on the text.
        context_length: tokens per block (the model's positions).
        batch_size: blocks per optimiser step.
        val_fraction, test_fraction: shares of the blocks held out.
    """

    text: str | None = None
    vocab_size: int = 1024
    context_length: int = 128
    batch_size: int = 16
    val_fraction: float = 0.1
    test_fraction: float = 0.05


@dataclass
class LMSchedule:
    """How long to train and when to save.

    Args:
        steps: optimiser steps.
        checkpoint_steps: steps after which a checkpoint is saved; null: `log_spaced_steps(steps)`.
        eval_every: validation loss every this many steps (and at every checkpoint).
        save_every_s: the resume state is also saved after this many seconds without a save.
    """

    steps: int = 3000
    checkpoint_steps: list[int] | None = None
    eval_every: int = 250
    save_every_s: float = 120.0

    def checkpoints(self) -> list[int]:
        steps = self.checkpoint_steps if self.checkpoint_steps is not None else log_spaced_steps(self.steps)
        bad = [s for s in steps if not 0 <= s <= self.steps]
        if bad:
            raise LTCError(f"checkpoint_steps {bad} lie outside 0..steps={self.steps}")
        return sorted(set(steps))


@dataclass
class LMRecipe:
    """Everything a training depends on (the directory's identity)."""

    net: LMNet = field(default_factory=LMNet)
    data: LMData = field(default_factory=LMData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(optimizer="adamw", lr=3e-3, weight_decay=0.1,
                                                                   scheduler="cosine", warmup_steps=100))
    schedule: LMSchedule = field(default_factory=LMSchedule)
    seed: int = 0

    def validate(self) -> None:
        for key in ("n_layer", "n_head", "n_embd"):
            if getattr(self.net, key) < 1:
                raise LTCError(f"net.{key} must be >= 1, got {getattr(self.net, key)}")
        if self.net.n_embd % self.net.n_head:
            raise LTCError(f"net.n_embd={self.net.n_embd} must be a multiple of net.n_head={self.net.n_head}")
        if self.schedule.steps < 1 or self.schedule.eval_every < 1 or self.data.batch_size < 1:
            raise LTCError("schedule.steps, schedule.eval_every and data.batch_size must be >= 1")
        self.schedule.checkpoints()


def log_spaced_steps(final: int) -> list[int]:
    """0, 30, 100, 300, 1000, 3000, ... below `final`, then `final`: 1 and 3 per decade from 30."""
    steps, decade = [0], 10
    while True:
        for step in (3 * decade, 10 * decade):
            if step >= final:
                return steps + [final]
            steps.append(step)
        decade *= 10


def _tokenizer_hash(data: TextDataModule) -> str:
    return hashlib.sha256(data.tokenizer.tokenizer.to_str().encode()).hexdigest()


def build(recipe: LMRecipe) -> tuple[TextDataModule, LanguageModelTask]:
    """The data and the task (its `net` the GPT-2 at initialisation, seeded by `recipe.seed`)."""
    d = recipe.data
    data = TextDataModule(path=d.text, tokenizer="bpe", vocab_size=d.vocab_size, context_length=d.context_length,
                          batch_size=d.batch_size, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                          seed=recipe.seed)
    torch.manual_seed(recipe.seed)
    n = recipe.net
    net = gpt2(vocab_size=data.vocab_size, n_layer=n.n_layer, n_head=n.n_head, n_embd=n.n_embd,
               n_positions=d.context_length, dropout=n.dropout, tie_word_embeddings=n.tie_word_embeddings)
    task = LanguageModelTask(net, **asdict(recipe.optim))
    return data, task


@torch.no_grad()
def evaluate(task: LanguageModelTask, blocks: torch.Tensor) -> dict[str, float]:
    """Token-weighted cross-entropy (nats) and accuracy of next-token prediction on `blocks`."""
    was_training = task.net.training
    task.net.eval()
    loss = correct = count = 0.0
    for chunk in blocks.split(EVAL_BATCH):
        loss_sum, right, n = task.token_sums((chunk,))
        loss, correct, count = loss + float(loss_sum), correct + float(right), count + float(n)
    task.net.train(was_training)
    return {"loss": loss / count, "acc": correct / count}


def save_checkpoint(layout: LMLayout, task: LanguageModelTask, data: TextDataModule, info: dict) -> Path:
    """`step-NNNNNN/`: the model (save_pretrained), its tokenizer, then checkpoint.json; atomic."""
    from transformers import PreTrainedTokenizerFast

    quiet_transformers()
    final = layout.checkpoint(info["step"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=layout.root))
    try:
        task.net.save_pretrained(tmp)
        PreTrainedTokenizerFast(tokenizer_object=data.tokenizer.tokenizer).save_pretrained(tmp)
        (tmp / LMLayout.info(tmp).name).write_text(json.dumps(info, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, disable=not enabled)


class Trainer:
    """One training of `recipe` in `out`: resumed from its state file when there is one."""

    def __init__(self, recipe: LMRecipe, out: Path) -> None:
        recipe.validate()
        self.recipe, self.layout = recipe, LMLayout(out)
        self.data, self.task = build(recipe)
        self.optimizer, self.scheduler = self._optimiser()
        self.step, self.seconds, self.log = 0, 0.0, []
        self.tokenizer_hash = _tokenizer_hash(self.data)

    def _optimiser(self):
        built = self.task.optim.build([p for p in self.task.net.parameters()], self.recipe.schedule.steps)
        if isinstance(built, dict):
            return built["optimizer"], built["lr_scheduler"]["scheduler"]
        return built, None

    def resume(self) -> bool:
        """Load the saved state if any; whether there was one."""
        if not self.layout.state.is_file():
            return False
        state = torch.load(self.layout.state, map_location="cpu", weights_only=True)
        if state["tokenizer_sha256"] != self.tokenizer_hash:
            raise LTCError(f"{self.layout.root}: the tokenizer fitted now differs from the saved one (another "
                           "`tokenizers` version?): train into a new --out")
        self.task.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.log = json.loads(state["log"])
        return True

    def save_state(self) -> None:
        state = {"model": self.task.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                 "rng": torch.get_rng_state(), "step": self.step, "seconds": self.seconds,
                 "log": json.dumps(self.log), "tokenizer_sha256": self.tokenizer_hash}
        rundir.atomic_write(self.layout.state, lambda tmp: torch.save(state, tmp))
        rundir.write_json(self.layout.log, {"evaluations": self.log, "seconds": self.seconds, "step": self.step})

    def evaluation(self, train_loss: float | None) -> dict:
        val = evaluate(self.task, self.data.val_blocks)
        entry = {"step": self.step, "val_loss": val["loss"], "val_acc": val["acc"], "train_loss": train_loss,
                 "tokens": self.step * self.recipe.data.batch_size * (self.recipe.data.context_length - 1),
                 "seconds": self.seconds}
        self.log.append(entry)
        return entry

    def checkpoint(self, train_loss: float | None) -> None:
        save_checkpoint(self.layout, self.task, self.data, self.evaluation(train_loss))
        self.save_state()

    def run(self, progress: bool = True) -> dict:
        """Train to the last step (or resume there); returns the final evaluation."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        if not self.layout.heldout.is_file():
            decode = self.data.tokenizer.decode
            held = torch.cat([self.data.val_blocks, self.data.test_blocks])
            rundir.write_text(self.layout.heldout, "\n\n".join(decode(b.tolist()) for b in held))
        schedule = self.recipe.schedule
        wanted = schedule.checkpoints()
        if not self.resume() and 0 in wanted:
            self.checkpoint(None)
        sampler = StepBatchSampler(len(self.data.train_blocks), self.recipe.data.batch_size, self.recipe.seed,
                                   schedule.steps)
        sampler.start_step = self.step
        self.task.net.train()
        running, last_save = math.nan, time.perf_counter()
        began, before = time.perf_counter(), self.seconds
        with _progress(progress) as bar:
            job = bar.add_task("training", total=schedule.steps, completed=self.step, status="")
            for indices in sampler:
                loss_sum, _, count = self.task.token_sums((self.data.train_blocks[indices],))
                loss = loss_sum / count
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.task.net.parameters(), 1.0)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                self.seconds = before + time.perf_counter() - began  # wall time, evaluations and saves included
                value = loss.item()
                running = value if math.isnan(running) else 0.95 * running + 0.05 * value
                if self.step in wanted:
                    self.checkpoint(running)
                    last_save = time.perf_counter()
                elif self.step % schedule.eval_every == 0:
                    self.evaluation(running)
                if time.perf_counter() - last_save > schedule.save_every_s:
                    self.save_state()
                    last_save = time.perf_counter()
                shown = self.log[-1]["val_loss"] if self.log else math.nan
                bar.update(job, completed=self.step, status=f"loss {running:.3f}  val {shown:.3f}")
        if self.step not in wanted or not self.layout.checkpoint(self.step).is_dir():
            self.evaluation(running)
            self.save_state()
        return self.log[-1]

    def unigram_loss(self) -> float:
        return self.data.unigram_loss()
