"""Next-token training of a causal Hugging Face language model (GPT-2 built from a config).

A batch is a dict (`input_ids`, optional `labels`, optional `loss_mask`), a tuple
`(input_ids[, labels])` or a bare tensor of input_ids. Labels follow the Hugging Face
convention: aligned with input_ids, -100 where a token is not scored, shifted here so position t
predicts token t + 1. `loss_mask` (1 = scored) is an alternative to -100 labels. For modular
addition only the answer token is scored.

Metrics, over the N scored tokens of a stage:
  loss = -(1/N) sum_t log p(x_t | x_<t)   (nats per token)
  acc  = (1/N) sum_t [argmax_v p(v | x_<t) = x_t]
  ppl  = exp(loss)
Validation and test accumulate sums over the whole epoch (exact token-weighted means, summed
across processes), then log `val/loss`, `val/acc`, `val/ppl` (and `test/...`), and `test/chance`:
the accuracy of always predicting the most frequent next token among the scored test positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from experiments.tasks.base import MajorityChance, Task
from lth.errors import LTCError

IGNORE = -100


def inputs_and_labels(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and aligned labels (-100 = not scored) from a dict, tuple or tensor batch."""
    loss_mask = None
    if isinstance(batch, dict):
        input_ids, labels, loss_mask = (
            batch["input_ids"],
            batch.get("labels"),
            batch.get("loss_mask"),
        )
    elif isinstance(batch, (list, tuple)):
        input_ids, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        input_ids, labels = batch, None
    labels = input_ids if labels is None else labels
    if loss_mask is not None:
        labels = labels.masked_fill(~loss_mask.bool(), IGNORE)
    return input_ids, labels


class TokenStats(Metric):
    """Sums of loss, correct predictions and scored tokens; `compute` gives loss, acc and ppl."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("loss_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: torch.Tensor) -> None:
        # out of place: states reset under inference mode (validate/test) are read-only later
        self.loss_sum = self.loss_sum + loss_sum.detach().double()
        self.correct = self.correct + correct
        self.count = self.count + count

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp(min=1)
        loss = self.loss_sum / count
        return {
            "loss": loss.float(),
            "acc": (self.correct / count).float(),
            "ppl": loss.exp().float(),
        }


class LanguageModelTask(Task):
    """Trains `net` (a causal HF LM returning `.logits`) to predict the next token.

    The optimiser arguments are `OptimConfig`'s. `forward(input_ids)` returns the logits.
    """

    def __init__(self, net: nn.Module, **optim) -> None:
        super().__init__(net, **optim)
        self.stats = nn.ModuleDict({"val": TokenStats(), "test": TokenStats()})
        self.test_chance = MajorityChance(net.config.vocab_size, IGNORE)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids, use_cache=False).logits

    def token_sums(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed cross-entropy, number correct and number of scored tokens of one batch."""
        input_ids, labels = inputs_and_labels(batch)
        vocab = self.net.config.vocab_size
        if int(input_ids.max()) >= vocab:
            raise LTCError(f"token id {int(input_ids.max())} is outside the model's vocabulary of {vocab}: "
                           "raise --model.init_args.net.init_args.vocab_size to the data's vocab_size")
        # causal: logits at t < T-1 see only input_ids[:, :T-1]; the last token is only a target
        logits, targets = self(input_ids[:, :-1]), labels[:, 1:]
        scored = targets != IGNORE
        loss_sum = F.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        correct = ((logits.argmax(-1) == targets) & scored).sum()
        return loss_sum, correct, scored.sum()

    def evaluation_pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids[:, :-1] and the shifted labels[:, 1:]: position t's label is what the net's
        output at t should predict (-100: not scored)."""
        input_ids, labels = inputs_and_labels(batch)
        return input_ids[:, :-1], labels[:, 1:]

    def count_correct(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        _, correct, count = self.token_sums(batch)
        return correct, count

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss_sum, correct, count = self.token_sums(batch)
        loss = loss_sum / count.clamp(min=1)
        self.log_step("train/loss", loss, prog_bar=True)
        self.log_step("train/acc", correct / count.clamp(min=1))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.stats["val"].update(*self.token_sums(batch))

    def test_step(self, batch, batch_idx: int) -> None:
        self.stats["test"].update(*self.token_sums(batch))
        self.test_chance.update(inputs_and_labels(batch)[1][:, 1:])

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")
        self.log("test/chance", self.test_chance.compute(), on_epoch=True)
        self.test_chance.reset()

    def _log_stage(self, stage: str) -> None:
        for name, value in self.stats[stage].compute().items():
            self.log(f"{stage}/{name}", value, on_epoch=True, prog_bar=name == "acc")
        self.stats[stage].reset()
