"""Datamodules for the canonical lottery-ticket benchmarks: MNIST, Fashion-MNIST and CIFAR-10.

The files are torchvision's on-disk layout under `root` (`MNIST/raw/*-ubyte`,
`FashionMNIST/raw/*-ubyte`, `cifar-10-batches-py/`); torchvision downloads them when
`download` is on. The whole set is held as uint8 tensors and served in batches: one indexing op
per batch, normalised (x / 255 - mean) / std and, for CIFAR-10 training batches, augmented as the
published recipes do (random 32x32 crop of the image zero-padded by 4, horizontal flip with
probability 1/2). The validation split is a seeded random subset of the official training set;
the test set is the official one.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lth.errors import LTCError


def one_line(exc: BaseException) -> str:
    """An exception as `Type: message` on one short line, for LTCError messages."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def random_crop_flip(images: Tensor, pad: int) -> Tensor:
    """Per-image random crop of the zero-padded batch back to its size, then a random flip.

    images: (B, C, H, W). Each image gets its own offsets in [0, 2 * pad] and its own coin for the
    horizontal flip, drawn from torch's global generator (seeded per worker by the DataLoader).
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2pad+1, 2pad+1, H, W), a view
    top = torch.randint(0, 2 * pad + 1, (b,))
    left = torch.randint(0, 2 * pad + 1, (b,))
    crops = windows[torch.arange(b), :, top, left]
    flip = (torch.rand(b) < 0.5).view(b, 1, 1, 1)
    return torch.where(flip, crops.flip(-1), crops)


class ImageBatches(Dataset):
    """uint8 images (N, C, H, W) with labels, served as normalised float32 batches.

    `__getitems__` lets the DataLoader fetch a whole batch with one indexing op instead of one
    Python call per image; loaders built on it pass `keep_batch` as collate_fn.
    """

    def __init__(self, images: Tensor, labels: Tensor, mean: tuple[float, ...],
                 std: tuple[float, ...], crop_pad: int = 0) -> None:
        self.images = images
        self.labels = labels
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.crop_pad = crop_pad

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index]
        if self.crop_pad:
            x = random_crop_flip(x, self.crop_pad)
        return (x.float() / 255 - self.mean) / self.std, self.labels[index]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """collate_fn for `ImageBatches`: the batch is already stacked."""
    return batch


class VisionDataModule(pl.LightningDataModule):
    """Shared split, loaders and probe batch; subclasses say where the files are and how to read them.

    Args:
        root: directory holding the data set in torchvision's layout.
        batch_size: training and evaluation batch size.
        num_workers: DataLoader worker processes.
        val_size: images of the official training set held out for validation (seeded split).
        seed: seed of the train/validation split (not of the data order, which follows the run's seed).
        download: fetch the files with torchvision when they are missing (needs network).
        augment: apply the recipe's training augmentation (CIFAR-10: crop + flip; MNIST: none).
        probe_size: size of the fixed validation batch `probe_inputs` returns.
    """

    title: str
    num_classes = 10
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pad = 0  # zero padding of the random-crop augmentation; 0 = no augmentation

    def __init__(self, root: str = "data", batch_size: int = 60, num_workers: int = 0,
                 val_size: int = 5000, seed: int = 0, download: bool = False,
                 augment: bool = True, probe_size: int = 512) -> None:
        super().__init__()
        if batch_size < 1:
            raise LTCError(f"batch_size must be at least 1, got {batch_size}")
        if val_size < 1:
            raise LTCError(f"val_size must be at least 1 (validation and probe inputs need it), got {val_size}")
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.augment = augment
        self.probe_size = probe_size
        self.train_set: ImageBatches | None = None
        self.val_set: ImageBatches | None = None
        self.test_set: ImageBatches | None = None

    # --- what subclasses provide -------------------------------------------------------------
    def data_dir(self) -> Path:
        """The directory the files live in."""
        raise NotImplementedError

    def expected_files(self) -> list[str]:
        """File names expected in `data_dir()`."""
        raise NotImplementedError

    def fetch(self) -> None:
        """Download and unpack the files into `data_dir()`."""
        raise NotImplementedError

    def read(self, train: bool) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of the official train or test set."""
        raise NotImplementedError

    def how_to_get(self) -> str:
        return "or copy the files there"

    # --- Lightning hooks ---------------------------------------------------------------------
    def missing_files(self) -> list[str]:
        return [f for f in self.expected_files() if not (self.data_dir() / f).is_file()]

    def prepare_data(self) -> None:
        """Download the files when asked to and they are missing (Lightning runs this on one process)."""
        if not self.download or not self.missing_files():
            return
        try:
            self.fetch()
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError
            raise LTCError(
                f"{self.title} download into {self.data_dir()} failed ({one_line(exc)}): "
                f"run on a machine with network, {self.how_to_get()}"
            ) from exc

    def setup(self, stage: str | None = None) -> None:
        """Read the files once, split the official training set, keep everything as uint8 tensors."""
        if self.train_set is not None:
            return
        self.prepare_data()
        missing = self.missing_files()
        if missing:
            raise LTCError(
                f"{self.title} not found under {self.data_dir()} (missing {', '.join(missing)}): "
                f"pass --data.init_args.download true on a machine with network, {self.how_to_get()}"
            )
        images, labels = self.read(train=True)
        if self.val_size >= len(labels):
            raise LTCError(
                f"val_size={self.val_size} leaves no training images: the official training set "
                f"under {self.data_dir()} has {len(labels)}; choose a smaller val_size"
            )
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        val, train = order[: self.val_size], order[self.val_size:]
        crop_pad = self.crop_pad if self.augment else 0
        self.train_set = ImageBatches(images[train], labels[train], self.mean, self.std, crop_pad)
        self.val_set = ImageBatches(images[val], labels[val], self.mean, self.std)
        self.test_set = ImageBatches(*self.read(train=False), self.mean, self.std)

    def _loader(self, data: ImageBatches, shuffle: bool) -> DataLoader:
        return DataLoader(
            data, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=keep_batch, pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def probe_inputs(self, n: int | None = None) -> Tensor:
        """The first n (default probe_size) validation inputs, normalised and never augmented.

        The same tensor for the same files and seed, so spectra of different levels and runs are
        measured on the same images.
        """
        self.setup()
        n = self.probe_size if n is None else n
        if not 1 <= n <= len(self.val_set):
            raise LTCError(
                f"probe of {n} inputs asked for, but the validation split has {len(self.val_set)}: "
                "use a probe_size between 1 and val_size"
            )
        return self.val_set.__getitems__(list(range(n)))[0]


class MNISTDataModule(VisionDataModule):
    """MNIST (LeCun et al. 1998): 60k/10k 28x28 grey digits, normalised with mean 0.1307, std 0.3081.

    No augmentation (the LeNet-300-100 recipe of Frankle & Carbin 2019 uses none).
    """

    title = "MNIST"
    dataset_class = torchvision.datasets.MNIST
    input_shape = (1, 28, 28)
    mean = (0.1307,)
    std = (0.3081,)

    def data_dir(self) -> Path:
        return self.root / self.dataset_class.__name__ / "raw"

    def expected_files(self) -> list[str]:
        return [name.removesuffix(".gz") for name, _ in self.dataset_class.resources]

    def fetch(self) -> None:
        self.dataset_class(str(self.root), train=True, download=True)

    def read(self, train: bool) -> tuple[Tensor, Tensor]:
        try:
            data = self.dataset_class(str(self.root), train=train, download=False)
        except Exception as exc:  # torchvision's IDX reader asserts, raises and fails in several ways
            raise LTCError(
                f"cannot read {self.title} under {self.data_dir()} ({one_line(exc)}): "
                "delete the files and download them again"
            ) from exc
        return data.data.unsqueeze(1).contiguous(), data.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017): MNIST's format with clothing; mean 0.2860, std 0.3530."""

    title = "Fashion-MNIST"
    dataset_class = torchvision.datasets.FashionMNIST
    mean = (0.2860,)
    std = (0.3530,)


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10 (Krizhevsky 2009): 50k/10k 32x32 colour images in 10 classes.

    Normalised with the training set's per-channel mean (0.4914, 0.4822, 0.4465) and std
    (0.2470, 0.2435, 0.2616); training batches are augmented by a random crop of the image
    zero-padded by 4 and a random horizontal flip (He et al. 2016; Frankle et al. 2020).
    The pickled batches are read here rather than through torchvision, which insists on the
    published MD5 sums (a corrupt file fails to unpickle and is reported).
    """

    title = "CIFAR-10"
    input_shape = (3, 32, 32)
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    crop_pad = 4
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)

    def data_dir(self) -> Path:
        return self.root / torchvision.datasets.CIFAR10.base_folder

    def expected_files(self) -> list[str]:
        return [*self.train_files, *self.test_files, "batches.meta"]

    def how_to_get(self) -> str:
        return f"or unpack cifar-10-python.tar.gz ({torchvision.datasets.CIFAR10.url}) into {self.root}"

    def fetch(self) -> None:
        torchvision.datasets.CIFAR10(str(self.root), train=True, download=True)

    def read(self, train: bool) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for name in self.train_files if train else self.test_files:
            path = self.data_dir() / name
            try:
                with open(path, "rb") as f:
                    batch = pickle.load(f, encoding="latin1")
                images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).view(-1, 3, 32, 32))
                labels.append(torch.as_tensor(batch["labels"], dtype=torch.long))
            except Exception as exc:  # unpickling a damaged file fails in many ways
                raise LTCError(
                    f"cannot read {path} ({one_line(exc)}): delete {self.data_dir()} and "
                    "download it again"
                ) from exc
        return torch.cat(images), torch.cat(labels)
