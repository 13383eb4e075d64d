"""Token contexts for measurements: contiguous blocks of tokenised text, in a fixed seeded order.

Text comes from a file, a directory of files (`experiments.data.text.read_corpus`), a Hugging Face
dataset (needs the `datasets` package; the split is streamed and reading stops after
`DATASET_CHARACTERS`), or by default Python's own pydoc topics (no download).

The documents are joined with blank lines, tokenised once and cut into non-overlapping blocks.
Context c is block order[c] of one seeded permutation, so asking for more contexts later keeps the
first ones (a sweep can be extended without recomputing them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from experiments.data.text import read_corpus
from lth.errors import LTCError

DATASET_CHARACTERS = 20_000_000


def read_dataset(spec: str, split: str = "train", column: str = "text") -> list[str]:
    """Documents of the Hugging Face dataset `NAME` or `NAME:CONFIG`, column `column` of `split`."""
    try:
        import datasets
    except ImportError as exc:
        raise LTCError(
            f"--dataset {spec!r} needs the `datasets` package (pip install datasets); or "
            "pass --text a text file or directory instead"
        ) from exc
    name, _, config = spec.partition(":")
    try:
        stream = datasets.load_dataset(name, config or None, split=split, streaming=True)
        documents, size = [], 0
        for row in stream:
            if column not in row:
                raise LTCError(
                    f"dataset {spec!r} has no column {column!r} (it has {', '.join(row)}): "
                    "pass --dataset_column"
                )
            documents.append(str(row[column]))
            size += len(documents[-1])
            if size >= DATASET_CHARACTERS:
                break
    except (OSError, ValueError, ConnectionError) as exc:
        if isinstance(exc, LTCError):
            raise
        raise LTCError(
            f"cannot read dataset {spec!r} split {split!r}: {' '.join(str(exc).split())[:300]}"
        ) from exc
    return documents


def read_documents(
    text: str | None, dataset: str | None, split: str = "train", column: str = "text"
) -> list[str]:
    """The documents of a text path, or of a dataset, or pydoc topics when both are None."""
    if text is not None and dataset is not None:
        raise LTCError("give --text or --dataset, not both")
    documents = read_dataset(dataset, split, column) if dataset is not None else read_corpus(text)
    if not any(doc.strip() for doc in documents):
        raise LTCError("the text is empty: give a file, directory or dataset with some text")
    return documents


def token_blocks(
    documents: list[str], encode: Callable[[str], list[int]], length: int, seed: int = 0
) -> torch.Tensor:
    """Blocks (n_blocks, length) of the tokenised text, in the seeded context order.

    `length` is clipped to the number of tokens when the text is shorter (one block then).
    """
    ids = torch.tensor(encode("\n\n".join(documents)), dtype=torch.long)
    length = min(length, len(ids))
    if length < 2:
        raise LTCError(
            f"the text has {len(ids)} token(s); Jacobians between positions need at least 2"
        )
    n_blocks = len(ids) // length
    blocks = ids[: n_blocks * length].view(n_blocks, length)
    return blocks[torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))]
