"""Vision datamodules on tiny files written in torchvision's own on-disk formats."""
import numpy as np
import pytest
import torch

from experiments.data.synthetic_vision import write_cifar10, write_mnist
from experiments.data.vision import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    random_crop_flip,
)
from lth.errors import LTCError

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"]


def normalised(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """Independent reference: float64 (pixels / 255 - mean) / std, channels on axis 1."""
    x = pixels.astype(np.float64) / 255
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.from_numpy((x - np.reshape(mean, shape)) / np.reshape(std, shape))


def all_batches(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("cls,folder,mean,std", [
    (MNISTDataModule, "MNIST", 0.1307, 0.3081),
    (FashionMNISTDataModule, "FashionMNIST", 0.2860, 0.3530),
])
def test_mnist_shapes_split_and_normalisation(tmp_path, cls, folder, mean, std):
    arrays = write_mnist(tmp_path, folder)
    dm = cls(root=str(tmp_path), batch_size=7, val_size=10, probe_size=4)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 12)

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long

    # test set: in file order, normalised, with its labels
    x_test, y_test = all_batches(dm.test_dataloader())
    expected = normalised(arrays["t10k-images-idx3-ubyte"][:, None], [mean], [std])
    torch.testing.assert_close(x_test.double(), expected, atol=1e-5, rtol=0)
    assert y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()

    # train + val = the official train set, disjoint, each image with its own label, no augmentation
    x_tr, y_tr = all_batches(dm.train_dataloader())
    x_val, y_val = all_batches(dm.val_dataloader())
    reference = normalised(arrays["train-images-idx3-ubyte"][:, None], [mean], [std]).float()
    labels = arrays["train-labels-idx1-ubyte"]
    found = []
    for xs, ys in [(x_tr, y_tr), (x_val, y_val)]:
        for img, label in zip(xs, ys):
            matches = (reference - img).abs().flatten(1).amax(1) < 1e-5
            assert matches.sum() == 1
            i = int(matches.nonzero())
            assert labels[i] == label
            found.append(i)
    assert sorted(found) == list(range(40))


def test_split_follows_seed_and_probe_is_deterministic(tmp_path):
    write_mnist(tmp_path)

    def make(seed):
        return MNISTDataModule(root=str(tmp_path), val_size=10, seed=seed, probe_size=6)

    probe = make(0).probe_inputs()
    assert probe.shape == (6, 1, 28, 28)
    torch.testing.assert_close(make(0).probe_inputs(), probe, rtol=0, atol=0)
    assert not torch.equal(make(1).probe_inputs(), probe)
    dm = make(0)
    assert torch.equal(dm.probe_inputs(3), probe[:3])
    x_val, _ = all_batches(dm.val_dataloader())
    assert torch.equal(x_val[:6], probe)  # the first validation inputs, in loader order
    with pytest.raises(LTCError, match="validation split has 10"):
        dm.probe_inputs(11)


def test_val_size_larger_than_train_set_is_explained(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(LTCError, match="val_size=40 leaves no training images.*has 40"):
        MNISTDataModule(root=str(tmp_path), val_size=40).setup()


@pytest.mark.parametrize("cls,where,names", [
    (MNISTDataModule, "MNIST/raw", MNIST_FILES),
    (FashionMNISTDataModule, "FashionMNIST/raw", MNIST_FILES),
    (CIFAR10DataModule, "cifar-10-batches-py",
     [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
])
def test_missing_files_give_one_line_naming_them(tmp_path, cls, where, names):
    dm = cls(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(LTCError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'nowhere' / where}" in message
    assert all(name in message for name in names)
    assert "download true" in message


def test_partly_missing_files_are_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(LTCError, match=r"missing t10k-labels-idx1-ubyte\)"):
        MNISTDataModule(root=str(tmp_path)).setup()


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(self):
        raise OSError("[Errno 101] Network is unreachable\nsecond line")

    monkeypatch.setattr(CIFAR10DataModule, "fetch", offline)
    with pytest.raises(LTCError, match="CIFAR-10 download into .* failed .*unreachable second line") as info:
        CIFAR10DataModule(root=str(tmp_path), download=True).setup()
    assert "\n" not in str(info.value)


def test_cifar10_shapes_split_normalisation_and_layout(tmp_path):
    (train_pixels, train_labels), (test_pixels, test_labels) = write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=5, val_size=12, augment=False, probe_size=3)
    dm.setup()
    assert dm.num_classes == 10 and dm.input_shape == (3, 32, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (28, 12, 10)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    x_test, y_test = all_batches(dm.test_dataloader())
    # each 3072-byte row holds the red plane, then green, then blue, each 32x32 row-major
    expected = normalised(test_pixels.reshape(-1, 3, 32, 32), mean, std)
    torch.testing.assert_close(x_test.double(), expected, atol=1e-5, rtol=0)
    assert y_test.tolist() == test_labels
    assert x_test[0, 1, 2, 5].item() == pytest.approx(
        (test_pixels[0, 1024 + 2 * 32 + 5] / 255 - mean[1]) / std[1], abs=1e-5)

    x_tr, y_tr = all_batches(dm.train_dataloader())
    x_val, y_val = all_batches(dm.val_dataloader())
    reference = normalised(train_pixels.reshape(-1, 3, 32, 32), mean, std).float()
    xs, ys = torch.cat([x_tr, x_val]), torch.cat([y_tr, y_val])
    index = [int(((reference - img).abs().flatten(1).amax(1) < 1e-5).nonzero()) for img in xs]
    assert sorted(index) == list(range(40))
    assert ys.tolist() == [train_labels[i] for i in index]


def test_cifar10_augments_training_batches_only(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=40, val_size=4)
    dm.setup()
    torch.manual_seed(0)
    x_aug, _ = dm.train_set.__getitems__(list(range(len(dm.train_set))))
    plain = dm.train_set.images.float()
    # every augmented image is one of the 9 x 9 crops of its zero-padded original, maybe mirrored
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4))
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    pixels = (x_aug * std + mean) * 255
    unchanged = 0
    for img, pad in zip(pixels, padded):
        candidates = [c for i in range(9) for j in range(9) for c in
                      (pad[:, i:i + 32, j:j + 32], pad[:, i:i + 32, j:j + 32].flip(-1))]
        assert min((img - c).abs().max() for c in candidates) < 1e-3
        unchanged += bool((img - pad[:, 4:36, 4:36]).abs().max() < 1e-3)
    assert unchanged < len(pixels) // 2  # augmentation really moves most images
    x_val, _ = dm.val_set.__getitems__([0, 1])
    assert torch.equal(x_val, dm.probe_inputs(2))  # validation is never augmented


def test_random_crop_flip_matches_offsets_by_hand():
    images = torch.arange(8 * 2 * 3 * 4).view(8, 2, 3, 4)
    torch.manual_seed(3)
    out = random_crop_flip(images, pad=1)
    torch.manual_seed(3)  # replay the draws: top offsets, left offsets, flip coins
    top, left = torch.randint(0, 3, (8,)).tolist(), torch.randint(0, 3, (8,)).tolist()
    flip = (torch.rand(8) < 0.5).tolist()
    assert 0 < sum(flip) < 8 and len(set(top)) > 1 and len(set(left)) > 1
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for b in range(8):
        crop = padded[b, :, top[b]:top[b] + 3, left[b]:left[b] + 4]
        assert torch.equal(out[b], crop.flip(-1) if flip[b] else crop)


def test_dataloader_workers_keep_batches(tmp_path):
    write_mnist(tmp_path)
    dm = MNISTDataModule(root=str(tmp_path), batch_size=16, val_size=8, num_workers=1)
    dm.setup()
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sizes == [16, 16]


def test_cifar10_reader_agrees_with_torchvision(tmp_path, monkeypatch):
    import torchvision

    write_cifar10(tmp_path)
    # torchvision checks the published MD5 sums, which tiny files cannot match: skip that check only
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    dm = CIFAR10DataModule(root=str(tmp_path))
    for train in (True, False):
        theirs = torchvision.datasets.CIFAR10(str(tmp_path), train=train)
        images, labels = dm.read(train)
        assert torch.equal(images, torch.from_numpy(theirs.data).permute(0, 3, 1, 2))
        assert labels.tolist() == theirs.targets
