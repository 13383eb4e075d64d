"""Datamodules whose splits are tensors held in memory: built once (`_build`), the training split
in shuffled batches, the evaluation splits whole (one batch), a fixed probe and a labelled
held-out set (the validation split) for the measurements."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class BatchedTensors(TensorDataset):
    """A TensorDataset that gives a whole batch with one index per tensor (`__getitems__`, which the
    DataLoader calls for a batch of indices) instead of stacking one sample at a time."""

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, ...]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [tuple(t[index] for t in self.tensors)]


def first_item(items: list):
    """The collate function of `BatchedTensors`: its one item is the batch already."""
    return items[0]


class TensorSplits(pl.LightningDataModule):
    """`_build()` returns {"train", "val", "test"} TensorDatasets whose first tensors are inputs and
    second labels; `shuffle_seed` orders the plain training loader (IMP replaces it with its own
    step-indexed order)."""

    def __init__(self, batch_size: int, probe_size: int, num_workers: int, shuffle_seed: int) -> None:
        super().__init__()
        self.batch_size, self.probe_size = batch_size, probe_size
        self.num_workers, self.shuffle_seed = num_workers, shuffle_seed
        self._splits: dict[str, TensorDataset] | None = None

    def _build(self) -> dict[str, TensorDataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self._build()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        data = BatchedTensors(*self._splits[split].tensors)
        size = self.batch_size if shuffle else len(data)
        gen = torch.Generator().manual_seed(self.shuffle_seed) if shuffle else None
        return DataLoader(data, batch_size=size, shuffle=shuffle, generator=gen, num_workers=self.num_workers,
                          collate_fn=first_item)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def probe_inputs(self, n: int | None = None) -> torch.Tensor:
        """A fixed batch of validation inputs (the first `probe_size`), for spectra."""
        self.setup()
        return self._splits["val"].tensors[0][: n or self.probe_size]

    def evaluation_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation inputs and labels (the held-out data of the tests that run networks)."""
        self.setup()
        return self._splits["val"].tensors[0], self._splits["val"].tensors[1]
