"""Training data order as a pure function of (seed, optimiser step), so a resumed level sees
exactly the batches an uninterrupted one would, and every IMP level sees the same order.

The index stream is the concatenation of seeded permutations of the data set (one per pass), or
of the data set in its stored order when the recipe's training loader does not shuffle (every
pass the same sequential batches, as the MNIST-1D notebook trains); step i takes the next
`batch_size * world_size` indices and each rank keeps its own slice.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler, SequentialSampler


class StepBatchSampler(Sampler[list[int]]):
    """Yields the batches of steps `start_step .. total_steps - 1` for this rank.

    Its length is always `total_steps`: Lightning resumes a level's single epoch at the
    checkpoint's batch index and ends it at this length, so a shorter length would end the epoch
    early and replay the data from `start_step` in a second one.
    """

    def __init__(self, size: int, batch_size: int, seed: int, total_steps: int,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.total_steps, self.rank, self.world_size = total_steps, rank, world_size
        self.shuffle = shuffle
        self.start_step = 0

    def __len__(self) -> int:
        return self.total_steps

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        per_step = self.batch_size * self.world_size
        position = self.start_step * per_step
        epoch, offset = divmod(position, self.size)
        perm = self._permutation(epoch)
        for _ in range(self.total_steps - self.start_step):
            chunk = []
            while len(chunk) < per_step:
                take = perm[offset : offset + per_step - len(chunk)]
                chunk.extend(take.tolist())
                offset += len(take)
                if offset == self.size:
                    epoch, offset = epoch + 1, 0
                    perm = self._permutation(epoch)
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


def step_indexed_loader(loader: DataLoader, seed: int, total_steps: int,
                        rank: int = 0, world_size: int = 1) -> tuple[DataLoader, StepBatchSampler]:
    """A copy of a training `loader` (same data set, batch size, collate, workers; in order when
    `loader` does not shuffle) drawing its batches from a `StepBatchSampler`; returns the loader
    and the sampler (to set `start_step`)."""
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", 1)
    shuffle = not isinstance(loader.sampler, SequentialSampler)
    sampler = StepBatchSampler(len(loader.dataset), batch_size, seed, total_steps, rank, world_size, shuffle)
    new = DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn,
                     num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                     persistent_workers=loader.persistent_workers if loader.num_workers else False)
    return new, sampler
