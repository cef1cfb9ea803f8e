"""mnist, fashion_mnist, cifar10, cifar100 from tiny files in torchvision's own formats."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from automl.data import DatasetError, load_dataset
from automl.spec import SpecError, validate_spec

N_TRAIN, N_TEST = 20, 6


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format): magic (uint8, ndim), big-endian sizes, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        write_idx(
            root / folder / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28))
        )
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar(root: Path, cls: type, monkeypatch: pytest.MonkeyPatch) -> int:
    """Tiny CIFAR pickles; torchvision's checksum lists are pointed at them."""
    rng = np.random.default_rng(1)
    hundred = cls is datasets.CIFAR100
    classes, label_key = (100, "fine_labels") if hundred else (10, "labels")
    folder = root / cls.base_folder
    folder.mkdir(parents=True)

    def batch(name: str, n: int, offset: int) -> list[str]:
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: [(offset + i) % classes for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
        return [name, md5(folder / name)]

    train_names = [name for name, _ in cls.train_list]
    per_batch = N_TRAIN // len(train_names) if not hundred else N_TRAIN
    monkeypatch.setattr(
        cls, "train_list", [batch(name, per_batch, 2 * i) for i, name in enumerate(train_names)]
    )
    monkeypatch.setattr(cls, "test_list", [batch(cls.test_list[0][0], N_TEST, 0)])
    meta_name, meta_key = cls.meta["filename"], cls.meta["key"]
    (folder / meta_name).write_bytes(pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]}))
    monkeypatch.setattr(
        cls, "meta", {"filename": meta_name, "key": meta_key, "md5": md5(folder / meta_name)}
    )
    return per_batch * len(train_names)


@pytest.mark.parametrize(
    ("source", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_family(data_root: Path, source: str, folder: str) -> None:
    write_mnist(data_root / "tv", folder)
    data = load_dataset(source, {"path": "tv", "val_fraction": 0.5})
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (1, 28, 28)
    assert len(data.train_y) + len(data.val_y) == N_TRAIN
    assert data.has_test and data.test_x.shape == (N_TEST, 1, 28, 28)
    assert data.test_y.tolist() == list(range(N_TEST))
    assert data.num_classes == 10 and data.classes == tuple(getattr(datasets, folder).classes)
    assert data.mean.shape == (1,) and 0.4 < float(data.mean[0]) < 0.6


@pytest.mark.parametrize("cls", [datasets.CIFAR10, datasets.CIFAR100], ids=["cifar10", "cifar100"])
def test_cifar_family(data_root: Path, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
    n_train = write_cifar(data_root, cls, monkeypatch)
    source = "cifar10" if cls is datasets.CIFAR10 else "cifar100"
    data = load_dataset(source, {"val_fraction": 0.5})
    assert data.train_x.shape[1:] == (3, 32, 32) and data.train_x.dtype == torch.uint8
    assert len(data.train_y) + len(data.val_y) == n_train
    assert data.test_x.shape == (N_TEST, 3, 32, 32)
    assert data.num_classes == (10 if source == "cifar10" else 100)
    assert data.classes[:2] == ("c0", "c1")
    raw = pickle.loads((data_root / cls.base_folder / cls.test_list[0][0]).read_bytes())
    assert torch.equal(data.test_x[0], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))


def test_corrupt_cifar_file_fails_the_checksum_naming_it(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar(data_root, datasets.CIFAR10, monkeypatch)
    (data_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    validate_spec({"name": "x", "dataset": {"source": "cifar10"}})  # every file is there
    with pytest.raises(DatasetError) as caught:
        load_dataset("cifar10")
    assert str(caught.value) == (
        "cifar10: data_batch_1 in cifar-10-batches-py/ failed torchvision's integrity check "
        "(MD5 checksum); put the original files in place, or delete it and set download: true"
    )


def test_unreadable_mnist_file_says_the_files_are_there(data_root: Path) -> None:
    write_mnist(data_root, "MNIST")
    (data_root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist")
    assert str(caught.value).startswith(
        "mnist: the files in MNIST/raw/ are all there but cannot be read ("
    )


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_missing_files_are_a_submit_error_naming_them(data_root: Path, source: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "x", "dataset": {"source": source}})
    [error] = caught.value.errors
    assert error.path == "dataset.options.path"
    assert "files not found; put " in error.msg and "or set download: true" in error.msg
    expected = {
        "mnist": "MNIST/raw/",
        "fashion_mnist": "FashionMNIST/raw/",
        "cifar10": "cifar-10-batches-py/",
        "cifar100": "cifar-100-python/",
    }
    assert f"in {expected[source]} under the data root" in error.msg


def test_download_without_network_fails_at_once(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Port 9 on localhost is closed: the real download code fails as it would offline.
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    validate_spec({"name": "x", "dataset": {"source": "mnist", "options": {"download": True}}})
    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist", {"download": True})
    message = str(caught.value)
    assert message.startswith("mnist: download failed (")
    assert (
        "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte in MNIST/raw/" in message
    )
    assert "\n" not in message
    with pytest.raises(
        DatasetError, match=r"^cifar10: download failed .*data_batch_1.*in cifar-10-batches-py/"
    ):
        load_dataset("cifar10", {"download": True})
    outside = {p.name for p in tmp_path.iterdir()}
    assert outside == {"data"}  # the download wrote nowhere but the data root


def test_unreadable_folder_is_a_submit_error(data_root: Path) -> None:
    write_mnist(data_root, "MNIST")
    locked = data_root / "MNIST"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions do not apply")
        with pytest.raises(SpecError) as caught:
            validate_spec({"name": "x", "dataset": {"source": "mnist"}})
    finally:
        locked.chmod(0o755)
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: cannot read MNIST/raw/: Permission denied"
    ]


@pytest.mark.parametrize(
    ("source", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_files_of_other_lengths_are_refused(
    data_root: Path, source: str, folder: str
) -> None:
    """Files built by hand: once the extra images were cut off without a word."""
    write_mnist(data_root, folder)
    write_idx(data_root / folder / "raw" / "train-labels-idx1-ubyte", np.arange(15) % 10)
    with pytest.raises(DatasetError) as caught:
        load_dataset(source)
    assert str(caught.value) == (
        f"{source}: {folder}/raw/train-images-idx3-ubyte holds {N_TRAIN} images but "
        f"{folder}/raw/train-labels-idx1-ubyte holds 15 labels; each image needs one label"
    )


def test_mnist_label_past_the_classes_is_refused(data_root: Path) -> None:
    """Once a raw ``IndexError: Target 11 is out of bounds`` in the middle of training."""
    write_mnist(data_root, "MNIST")
    labels = np.arange(N_TEST) % 10
    labels[3] = 11
    write_idx(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist")
    assert str(caught.value) == (
        "mnist: MNIST/raw/t10k-labels-idx1-ubyte holds label 11; labels run from 0 to 9 "
        "(mnist has 10 classes)"
    )


def rewrite_batch(root: Path, cls: type, name: str, entry: dict[str, object]) -> None:
    """Replaces a CIFAR batch written by ``write_cifar``, and its checksum."""
    path = root / cls.base_folder / name
    path.write_bytes(pickle.dumps(entry))
    for listed in (*cls.train_list, *cls.test_list):
        if listed[0] == name:
            listed[1] = md5(path)


@pytest.mark.parametrize("cls", [datasets.CIFAR10, datasets.CIFAR100], ids=["cifar10", "cifar100"])
def test_cifar_batch_of_other_lengths_or_labels_is_refused(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, cls: type
) -> None:
    write_cifar(data_root, cls, monkeypatch)
    source, classes = ("cifar10", 10) if cls is datasets.CIFAR10 else ("cifar100", 100)
    key = "labels" if classes == 10 else "fine_labels"
    name = cls.train_list[-1][0]
    data = np.zeros((4, 3072), dtype=np.uint8)
    rewrite_batch(data_root, cls, name, {"data": data, key: [0, 1, 2]})
    with pytest.raises(DatasetError) as caught:
        load_dataset(source)
    assert str(caught.value) == (
        f"{source}: {cls.base_folder}/{name} holds 4 images but 3 labels; each image needs one "
        "label"
    )
    rewrite_batch(data_root, cls, name, {"data": data, key: [0, classes, 2, -1]})
    with pytest.raises(DatasetError) as caught:
        load_dataset(source)
    assert str(caught.value) == (
        f"{source}: {cls.base_folder}/{name} holds label {classes}; labels run from 0 to "
        f"{classes - 1} ({source} has {classes} classes)"
    )


def test_a_class_the_training_files_lack_is_named_untrained(data_root: Path) -> None:
    """Found by a tester: MNIST files with no 7 in training but some in test said only
    "fewest training images: '7 - seven', 0"; the trials' notes said nothing."""
    from automl.cli.study_commands import data_summary, data_text

    write_mnist(data_root / "tv", "MNIST")
    labels = np.arange(N_TRAIN) % 10
    labels[labels == 7] = 6
    write_idx(data_root / "tv" / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    spec = validate_spec({"name": "x", "dataset": {"source": "mnist", "options": {"path": "tv"}}})

    data = load_dataset("mnist", {"path": "tv"})

    assert data.unscored_classes()["no_training_images"] == ["7 - seven"]
    assert (
        "\n  untrained   1 class without training images ('7 - seven'): the model never predicts it"
    ) in data_text(data_summary(spec))


def test_missing_mnist_files_that_are_there_gzipped_are_named(data_root: Path) -> None:
    """Found by a tester: MNIST's site serves .gz files, which torchvision unpacks only
    when it downloads them itself; the error did not say they were there."""
    write_mnist(data_root / "tv", "MNIST")
    raw = data_root / "tv" / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).rename(raw / f"{name}.gz")

    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "x", "dataset": {"source": "mnist", "options": {"path": "tv"}}})

    assert caught.value.errors[0].msg.endswith(
        "or set download: true (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz are "
        "there: unpack with gunzip)"
    )
