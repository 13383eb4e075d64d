"""Language modelling on plain text: a file, a directory of files, or Python's own documentation.

The default corpus is `pydoc_data.topics.topics` (about 465 kB of English prose that ships with
Python), so nothing is downloaded. The text is tokenised character by character or with a
byte-level BPE trained on it (`tokenizers`), cut into contiguous blocks of `context_length`
tokens, and the blocks are split train / val / test by a seeded permutation.

The tokenizer is fitted on the whole text (it only decides the segmentation); the model and the
unigram baseline see training blocks only.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.utils.data import DataLoader, TensorDataset

from lth.errors import LTCError


def read_corpus(path: str | None) -> list[str]:
    """The documents: pydoc topics when `path` is None, else a file or the files of a directory."""
    if path is None:
        from pydoc_data.topics import topics

        return [topics[key] for key in sorted(topics)]
    root = Path(path).expanduser()
    if not root.exists():
        raise LTCError(
            f"text path {str(root)!r} does not exist: give a text file, a directory or null"
        )
    files = (
        [root]
        if root.is_file()
        else sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    )
    if not files:
        raise LTCError(f"text directory {str(root)!r} holds no files")
    documents = []
    for file in files:
        try:
            documents.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise LTCError(
                f"text file {str(file)!r} is not UTF-8 ({error.reason}): convert it or remove it"
            ) from error
    return documents


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of the corpus."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = set(text) - self.index.keys()
        if unknown:
            raise LTCError(
                f"characters {sorted(unknown)!r} are not in the vocabulary of the training text"
            )
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class BPETokenizer:
    """Byte-level BPE trained on the corpus with `tokenizers`: any text encodes, decodes exactly."""

    def __init__(self, documents: list[str], vocab_size: int) -> None:
        self.tokenizer = Tokenizer(models.BPE())
        self.tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self.tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        self.tokenizer.train_from_iterator(documents, trainer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


class TextDataModule(pl.LightningDataModule):
    """Contiguous token blocks of a text corpus for next-token prediction.

    Batches are `(input_ids,)` of shape (batch, context_length); the task predicts each token from
    the ones before it within the block.

    Args:
        path: a UTF-8 text file, a directory of them (recursive, sorted), or None for pydoc topics.
        tokenizer: `char` (one token per character) or `bpe` (byte-level BPE trained on the text).
        vocab_size: target vocabulary size of the BPE (ignored for `char`; at least 256 bytes).
        context_length: tokens per block.
        batch_size: sequences per batch.
        num_workers: DataLoader workers.
        probe_size: number of validation blocks `probe_inputs` returns by default.
        val_fraction, test_fraction: shares of the blocks held out (at least one block each).
        seed: seed of the split.
    """

    def __init__(
        self,
        path: str | None = None,
        tokenizer: str = "char",
        vocab_size: int = 512,
        context_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        probe_size: int = 32,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if tokenizer not in ("char", "bpe"):
            raise LTCError(f"unknown tokenizer {tokenizer!r}: use char or bpe")
        if tokenizer == "bpe" and vocab_size < 256:
            raise LTCError(
                f"bpe vocab_size must be at least 256 (the byte alphabet), got {vocab_size}"
            )
        if context_length < 2:
            raise LTCError(f"context_length must be at least 2 tokens, got {context_length}")
        if val_fraction <= 0 or test_fraction <= 0 or val_fraction + test_fraction >= 1:
            raise LTCError(
                f"val_fraction {val_fraction} and test_fraction {test_fraction} "
                "must be positive and sum below 1"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.probe_size = probe_size
        documents = read_corpus(path)
        text = "\n\n".join(documents)
        self.tokenizer = (
            CharTokenizer(text) if tokenizer == "char" else BPETokenizer(documents, vocab_size)
        )
        self.vocab_size = self.tokenizer.vocab_size
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        n_blocks = len(ids) // context_length
        n_val, n_test = math.ceil(val_fraction * n_blocks), math.ceil(test_fraction * n_blocks)
        if n_blocks - n_val - n_test < 1:
            raise LTCError(
                f"the text has {len(ids)} tokens, too few for train/val/test blocks of "
                f"{context_length}: use more text or a shorter context_length"
            )
        blocks = ids[: n_blocks * context_length].view(n_blocks, context_length)
        blocks = blocks[torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))]
        self.train_blocks = blocks[n_val + n_test :]
        self.val_blocks = blocks[:n_val]
        self.test_blocks = blocks[n_val : n_val + n_test]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.train_blocks),
            self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.val_blocks), self.batch_size, num_workers=self.num_workers
        )

    def test_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.test_blocks), self.batch_size, num_workers=self.num_workers
        )

    def probe_inputs(self, n: int | None = None) -> torch.Tensor:
        """The first n validation blocks (input_ids), a fixed batch for spectra."""
        return self.val_blocks[: n or self.probe_size].clone()

    def unigram_loss(self) -> float:
        """Cross-entropy (nats/token) of the train unigram distribution on the validation targets.

        H = -(1/N) sum_t log q(x_t) over the N scored validation tokens (all but each block's
        first), with q(v) = (count_train(v) + 1) / (n_train + V): add-one smoothing keeps unseen
        tokens finite.
        A model that beats this uses context.
        """
        counts = (
            torch.bincount(self.train_blocks.flatten(), minlength=self.vocab_size).double() + 1.0
        )
        log_q = (counts / counts.sum()).log()
        return float(-log_q[self.val_blocks[:, 1:].flatten()].mean())
