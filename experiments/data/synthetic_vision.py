"""MNIST and CIFAR-10 files of random pixels and random labels, in torchvision's on-disk formats.

For tests and for timing the vision recipes where the real files are absent (a machine without
network). The images carry no signal about the labels, so accuracy on them is chance (about 0.1);
the time a training step takes is the real one, as it depends only on shapes. Each writer leaves a
`SYNTHETIC.txt` beside the files, which `is_synthetic` looks for, so results can say which data
they came from. `FULL_SIZE` gives the official set sizes.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

MARKER = "SYNTHETIC.txt"
# the official sizes: MNIST 60k/10k images, CIFAR-10 5 training batches of 10k and a 10k test batch
FULL_SIZE = {"mnist": {"n_train": 60_000, "n_test": 10_000}, "cifar10": {"per_batch": 10_000, "n_test": 10_000}}


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x0000 08 <ndim> (unsigned bytes), big-endian int32 dims, then the raw bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text("random pixels and random labels written by experiments.data.synthetic_vision: "
                                 "accuracy on them is chance\n")


def is_synthetic(folder: Path) -> bool:
    """Whether the data files in `folder` were written by this module."""
    return (Path(folder) / MARKER).is_file()


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 12,
                seed: int = 0) -> dict[str, np.ndarray]:
    """The 4 raw IDX files under root/<folder>/raw (MNIST or FashionMNIST); returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(raw / name, array)
    _mark(raw)
    return arrays


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 10, seed: int = 0):
    """data_batch_1..5, test_batch and batches.meta as pickled dicts under root/cifar-10-batches-py;
    returns ((train images, train labels), (test images, test labels)), images as (N, 3072) uint8."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        if name == "test_batch":
            test = (data, labels)
        else:
            train_images.append(data)
            train_labels += labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    _mark(folder)
    return (np.concatenate(train_images), train_labels), test
