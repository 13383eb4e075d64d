"""MNIST-1D (Greydanus 2020): 40-sample 1-D digit signals, 10 classes, built procedurally (no download)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiments.data.splits import TensorSplits
from lth.errors import LTCError


class MNIST1DDataModule(TensorSplits):
    """The standard MNIST-1D set (4000 train / 1000 test at the defaults), split train/val by `seed`.

    Args:
        batch_size: training batch size (evaluation uses the whole split at once).
        val_size: examples held out of the official training split for validation.
        num_samples: total examples generated (80% train, 20% test, as in MNIST-1D).
        data_seed: seed of the procedural generator (42 = the published data set).
        seed: seed of the train/val split.
        probe_size: validation examples used as the fixed probe set for spectra.
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 128,
        val_size: int = 500,
        num_samples: int = 5000,
        data_seed: int = 42,
        seed: int = 0,
        probe_size: int = 500,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, probe_size, num_workers, shuffle_seed=seed)
        if batch_size < 1:
            raise LTCError(f"data batch_size must be >= 1, got {batch_size}")
        train_n = int(0.8 * num_samples)
        if not 0 < val_size < train_n:
            raise LTCError(f"val_size must be in (0, {train_n}) for num_samples={num_samples}, got {val_size}")
        self.val_size, self.num_samples, self.data_seed, self.seed = val_size, num_samples, data_seed, seed
        self.input_shape = (40,)

    def _build(self) -> dict[str, TensorDataset]:
        raw = generate(self.num_samples, self.data_seed)
        x, y = _tensors(raw["x"], raw["y"])
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        return {
            "train": TensorDataset(x[train_idx], y[train_idx]),
            "val": TensorDataset(x[val_idx], y[val_idx]),
            "test": TensorDataset(*_tensors(raw["x_test"], raw["y_test"])),
        }


class MNIST1DNotebookDataModule(MNIST1DDataModule):
    """MNIST-1D as the lottery-ticket notebook of the MNIST-1D project trains on it: every one of
    the 4000 training examples, in their stored order, in sequential batches (step s takes
    examples (s * batch_size) mod 4000 onwards; `shuffle` true draws seeded permutations instead).

    There is no held-out split: the notebook tracks the test accuracy during training and selects
    nothing on it, so validation (and the spectra probe) read the test split here.

    Args:
        batch_size: training batch size (the notebook's 100).
        shuffle: a seeded permutation per pass instead of the stored order.
        num_samples: total examples generated (80% train, 20% test).
        data_seed: seed of the procedural generator (42 = the published data set).
        probe_size: test examples used as the fixed probe set for spectra.
    """

    def __init__(self, batch_size: int = 100, shuffle: bool = False, num_samples: int = 5000, data_seed: int = 42,
                 probe_size: int = 500, num_workers: int = 0) -> None:
        super().__init__(batch_size, 1, num_samples, data_seed, 0, probe_size, num_workers)
        self.shuffle = shuffle

    def _build(self) -> dict[str, TensorDataset]:
        raw = generate(self.num_samples, self.data_seed)
        test = TensorDataset(*_tensors(raw["x_test"], raw["y_test"]))
        return {"train": TensorDataset(*_tensors(raw["x"], raw["y"])), "val": test, "test": test}

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle, self.batch_size)


def _tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.long)


def generate(num_samples: int, data_seed: int) -> dict:
    """The raw MNIST-1D arrays (`mnist1d.data.make_dataset`; the defaults build the published set)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, data_seed
    return make_dataset(args)
