"""Modular addition a + b mod p as next-token prediction (the grokking task).

Every pair (a, b) with 0 <= a, b < p is one sequence `[a, b, =, c]` with c = (a + b) mod p;
tokens 0..p-1 are the numbers and p is `=`. Only the answer c is scored: `labels` is -100
everywhere else (the Hugging Face convention: labels are aligned with input_ids and shifted by
the task). A seeded permutation puts `train_fraction` of the pairs in training; the rest is split
in half into validation and test.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lth.errors import LTCError

IGNORE = -100


def modular_addition_sequences(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All p^2 sequences `[a, b, p, (a+b) mod p]` (input_ids) and their labels (answer only)."""
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(1)
    answer = (a + b) % p
    input_ids = torch.stack([a, b, torch.full_like(a, p), answer], 1)
    labels = torch.full_like(input_ids, IGNORE)
    labels[:, -1] = answer
    return input_ids, labels


class ModularAdditionDataModule(pl.LightningDataModule):
    """Seeded train / val / test split of all pairs for a + b mod p.

    Args:
        p: the modulus; numbers are tokens 0..p-1 and `=` is token p, so `vocab_size = p + 1`.
        train_fraction: share of all p^2 pairs used for training (0.3 in the grokking work).
        batch_size: training batch size; None trains full-batch on the whole training set.
        num_workers: DataLoader workers.
        probe_size: number of validation sequences `probe_inputs` returns by default.
        seed: seed of the split.
    """

    def __init__(
        self,
        p: int = 113,
        train_fraction: float = 0.3,
        batch_size: int | None = None,
        num_workers: int = 0,
        probe_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if p < 2:
            raise LTCError(f"modulus p must be at least 2, got {p}")
        if not 0.0 < train_fraction < 1.0:
            raise LTCError(f"train_fraction must be in (0, 1), got {train_fraction}")
        if batch_size is not None and batch_size < 1:
            raise LTCError(f"batch_size must be positive or null (full batch), got {batch_size}")
        self.p = p
        self.vocab_size = p + 1
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.probe_size = probe_size
        input_ids, labels = modular_addition_sequences(p)
        order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
        n_train = round(train_fraction * p * p)
        if n_train < 1 or p * p - n_train < 2:
            raise LTCError(f"train_fraction {train_fraction} leaves an empty split for p={p}")
        n_val = (p * p - n_train) // 2
        parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
        self.train_set, self.val_set, self.test_set = (
            TensorDataset(input_ids[i], labels[i]) for i in parts
        )

    def train_dataloader(self) -> DataLoader:
        if self.batch_size is None:
            # the whole set as one batch: an index-free loader avoids re-stacking it every step
            return DataLoader([self.train_set.tensors], batch_size=None)
        return DataLoader(
            self.train_set, self.batch_size, shuffle=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)

    def _eval_loader(self, dataset: TensorDataset) -> DataLoader:
        if self.batch_size is None:
            return DataLoader([dataset.tensors], batch_size=None)
        return DataLoader(dataset, self.batch_size, num_workers=self.num_workers)

    def probe_inputs(self, n: int | None = None) -> torch.Tensor:
        """The first n validation prompts `[a, b, =]` (no answer), a fixed batch for spectra."""
        return self.val_set.tensors[0][: n or self.probe_size, :3].clone()
