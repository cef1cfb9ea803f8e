"""``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` through torchvision's dataset classes.

The files live under the data root in torchvision's own layout (``MNIST/raw/...``,
``cifar-10-batches-py/...``). They are already uint8 arrays, so they are read directly,
without the decode cache. The official test split is exposed as the test split; the
validation split is a stratified share of the official training split.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from automl.data.base import (
    DatasetOptions,
    ImageData,
    channel_stats,
    options_fingerprint,
    register_dataset,
)
from automl.data.errors import DatasetError
from automl.data.paths import confine, relative_name
from automl.data.splits import SplitSeed, stratified_split
from automl.wording import clipped

DOWNLOAD_TIMEOUT_S = 30.0
"""Seconds a download may wait on the network before it fails."""
_CIFAR_IMAGE_BYTES = 3 * 32 * 32
"""Bytes of one image in a CIFAR batch's ``data`` (torchvision reshapes it to (N, 3, 32, 32))."""


@dataclass(frozen=True)
class TorchvisionDataset:
    """How one torchvision dataset class lays out its files.

    Attributes:
        name: The source's name (``cifar10``).
        class_name: The class in ``torchvision.datasets`` (``CIFAR10``); torchvision is
            imported only when a spec uses the source (it costs seconds at start-up).
        channels: The images' color channels (1: grayscale, 3: RGB; None: not said).
    """

    name: str
    class_name: str
    channels: int | None = None

    @property
    def dataset_class(self) -> type[Any]:
        """The torchvision dataset class (imports ``torchvision.datasets``)."""
        return cast(type[Any], getattr(_datasets(), self.class_name))

    @property
    def folder(self) -> str:
        """The folder below ``path`` that holds the files."""
        cls = self.dataset_class
        if issubclass(cls, _datasets().MNIST):
            return f"{cls.__name__}/raw"
        return str(cls.base_folder)

    @property
    def files(self) -> list[str]:
        """The files torchvision reads."""
        cls = self.dataset_class
        if issubclass(cls, _datasets().MNIST):
            return [os.path.splitext(name)[0] for name, _ in cls.resources]
        return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    @property
    def is_mnist(self) -> bool:
        """Whether the class is of the MNIST family (IDX files, not CIFAR's pickles)."""
        return issubclass(self.dataset_class, _datasets().MNIST)

    def split_files(self, train: bool) -> list[str]:
        """The files of one split: MNIST's images and labels files, or CIFAR's batches."""
        cls = self.dataset_class
        if self.is_mnist:
            prefix = "train" if train else "t10k"
            return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
        return [name for name, _ in (cls.train_list if train else cls.test_list)]

    def missing(self, root: Path) -> list[str]:
        """The expected files not present under ``root``.

        Raises:
            DatasetError: If the folder cannot be searched (its permissions).
        """
        folder = root / self.folder
        try:
            return [name for name in self.files if not (folder / name).is_file()]
        except OSError as exc:
            raise DatasetError(f"cannot read {relative_name(folder)}/: {exc.strerror}") from None

    def failing_checksums(self, root: Path) -> list[str]:
        """The files under ``root`` whose MD5 checksum is not the one torchvision expects.

        Reads every file: call it only once reading them failed. MNIST's unpacked files
        have no checksum in torchvision, so the MNIST family never lists any.
        """
        cls = self.dataset_class
        if issubclass(cls, _datasets().MNIST):
            return []
        check = importlib.import_module("torchvision.datasets.utils").check_integrity
        listed = [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]
        return [name for name, md5 in listed if not check(str(root / self.folder / name), md5)]

    def where(self, root: Path) -> str:
        """A one-line instruction naming the expected files and their folder."""
        return (
            f"put {', '.join(self.files)} in {relative_name(root / self.folder)}/ under the "
            "data root (AUTOML_DATA_ROOT), torchvision's layout"
        )


class TorchvisionOptions(DatasetOptions):
    """Options of the torchvision sources."""

    download: bool = Field(False, description="Download with torchvision if files are missing.")
    path: str = Field(
        ".",
        description="Folder under the data root holding torchvision's layout.",
        validate_default=True,
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the official training split held out."
    )
    seed: SplitSeed = Field(0, description="Seed of the stratified split.")

    @field_validator("path")
    @classmethod
    def _check_files(cls, value: str, info: ValidationInfo) -> str:
        root = confine(value)
        if not info.data.get("download", False):
            spec = _SPEC_OF_OPTIONS[cls]
            missing = spec.missing(root)
            if missing:
                raise DatasetError(
                    f"{spec.name} files not found; {spec.where(root)}, or set download: true"
                    + _packed_hint(root / spec.folder, missing)
                )
        return value


def _packed_hint(folder: Path, missing: list[str]) -> str:
    """Where the missing files are there gzipped (as MNIST's site serves them), says so:
    torchvision unpacks only what it downloads itself."""
    try:
        packed = [f"{name}.gz" for name in missing if (folder / f"{name}.gz").is_file()]
    except OSError:
        return ""
    if not packed:
        return ""
    verb = "is" if len(packed) == 1 else "are"
    return f" ({', '.join(packed)} {verb} there: unpack with gunzip)"


_SPEC_OF_OPTIONS: dict[type[TorchvisionOptions], TorchvisionDataset] = {}


def _datasets() -> Any:
    """``torchvision.datasets``, imported on first use."""
    return importlib.import_module("torchvision.datasets")


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _open(spec: TorchvisionDataset, root: Path, train: bool, download: bool) -> Any:
    fetch = download and bool(spec.missing(root))
    try:
        if fetch:
            with _network_timeout(DOWNLOAD_TIMEOUT_S):
                return spec.dataset_class(str(root), train=train, download=True)
        return spec.dataset_class(str(root), train=train, download=False)
    except MemoryError:
        raise
    except Exception as exc:  # torchvision fails on a damaged file in many ways (AssertionError...)
        raise _unreadable(spec, root, exc, fetch) from None


def _unreadable(spec: TorchvisionDataset, root: Path, exc: Exception, fetch: bool) -> DatasetError:
    """The error for files torchvision could not download or read: which files, and why."""
    reason = clipped(" ".join(str(exc).split())) or type(exc).__name__
    if fetch or spec.missing(root):
        action = "download failed" if fetch else "cannot read the files"
        return DatasetError(f"{spec.name}: {action} ({reason}); {spec.where(root)}")
    folder = relative_name(root / spec.folder)
    failed = spec.failing_checksums(root)
    if failed:
        them = "it" if len(failed) == 1 else "them"
        return DatasetError(
            f"{spec.name}: {', '.join(failed)} in {folder}/ failed torchvision's integrity check "
            f"(MD5 checksum); put the original files in place, or delete {them} and set "
            "download: true"
        )
    return DatasetError(
        f"{spec.name}: the files in {folder}/ are all there but cannot be read ({reason}); "
        "replace them with the original files, or delete them and set download: true"
    )


def _tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.data
    if isinstance(data, torch.Tensor):  # MNIST family: (N, H, W) uint8
        images = data.to(torch.uint8).unsqueeze(1)
    else:  # CIFAR family: numpy (N, H, W, C) uint8
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _checked_tensors(
    spec: TorchvisionDataset, root: Path, dataset: Any, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_tensors`` of one split, once every image has one label that names a class.

    torchvision reads files built by hand as they are: more images than labels would be
    cut silently, and a label past the classes fails training with an ``IndexError``.

    Raises:
        DatasetError: Naming the file, the counts or the label, and the valid range.
    """
    images, labels = _tensors(dataset)
    classes = len(dataset.classes)
    if len(images) != len(labels) or _bad_label(labels, classes) is not None:
        raise _label_error(spec, root, train, len(images), labels, classes)
    return images, labels


def _bad_label(labels: torch.Tensor, classes: int) -> int | None:
    """The first label outside ``0 .. classes - 1``, if any."""
    bad = ((labels < 0) | (labels >= classes)).nonzero()
    return int(labels[bad[0, 0]]) if len(bad) else None


def _label_error(
    spec: TorchvisionDataset,
    root: Path,
    train: bool,
    n_images: int,
    labels: torch.Tensor,
    classes: int,
) -> DatasetError:
    """The error for a split whose images and labels disagree, naming the file at fault."""
    folder = relative_name(root / spec.folder)
    valid = f"labels run from 0 to {classes - 1} ({spec.name} has {classes} classes)"
    if spec.is_mnist:
        images_file, labels_file = spec.split_files(train)
        if n_images != len(labels):
            return DatasetError(
                f"{spec.name}: {folder}/{images_file} holds {n_images} images but "
                f"{folder}/{labels_file} holds {len(labels)} labels; each image needs one label"
            )
        return DatasetError(
            f"{spec.name}: {folder}/{labels_file} holds label {_bad_label(labels, classes)}; "
            f"{valid}"
        )
    names = spec.split_files(train)
    for name in names:
        batch = _read_batch(root / spec.folder / name)
        if batch is None:
            continue
        batch_images, batch_labels = batch
        if batch_images != len(batch_labels):
            return DatasetError(
                f"{spec.name}: {folder}/{name} holds {batch_images} images but "
                f"{len(batch_labels)} labels; each image needs one label"
            )
        bad = _bad_label(batch_labels, classes)
        if bad is not None:
            return DatasetError(f"{spec.name}: {folder}/{name} holds label {bad}; {valid}")
    return DatasetError(
        f"{spec.name}: {', '.join(names)} in {folder}/ hold {n_images} images but "
        f"{len(labels)} labels, or labels outside 0 to {classes - 1}; each image needs one label"
    )


def _read_batch(path: Path) -> tuple[int, torch.Tensor] | None:
    """A CIFAR batch's image count and labels, read as torchvision reads it; None if not."""
    try:
        with open(path, "rb") as handle:
            # The file torchvision just unpickled itself, after its MD5 check.
            entry = pickle.load(handle, encoding="latin1")
        labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
        return np.asarray(entry["data"]).size // _CIFAR_IMAGE_BYTES, torch.as_tensor(labels)
    except Exception:  # any damage: the caller then names every batch
        return None


def _file_stats(spec: TorchvisionDataset, root: Path) -> list[tuple[str, int, int]]:
    stats = []
    for name in spec.files:
        path = root / spec.folder / name
        if path.is_file():
            stat = path.stat()
            stats.append((name, stat.st_size, stat.st_mtime_ns))
    return stats


def _register(spec: TorchvisionDataset, description: str) -> None:
    options_model = type(
        f"{spec.class_name}Options",
        (TorchvisionOptions,),
        {
            "__doc__": f"Options of ``{spec.name}`` (torchvision's {spec.class_name}).",
            "channels_of": classmethod(lambda cls, options: spec.channels),
        },
    )
    _SPEC_OF_OPTIONS[options_model] = spec

    def fingerprint(options: TorchvisionOptions) -> str:
        return options_fingerprint(spec.name, options, _file_stats(spec, confine(options.path)))

    def load(options: TorchvisionOptions) -> ImageData:
        root = confine(options.path)
        train_set = _open(spec, root, train=True, download=options.download)
        train_x, train_y = _checked_tensors(spec, root, train_set, train=True)
        test_set = _open(spec, root, train=False, download=False)
        test_x, test_y = _checked_tensors(spec, root, test_set, train=False)
        keep, val_idx = stratified_split(train_y, options.val_fraction, options.seed)
        mean, std = channel_stats(train_x[keep])
        return ImageData(
            train_x=train_x[keep],
            train_y=train_y[keep],
            val_x=train_x[val_idx],
            val_y=train_y[val_idx],
            classes=tuple(str(name) for name in test_set.classes),
            mean=mean,
            std=std,
            fingerprint=fingerprint(options),
            test_x=test_x,
            test_y=test_y,
        )

    register_dataset(spec.name, options_model, fingerprint=fingerprint, description=description)(
        load
    )


for _spec, _description in (
    (TorchvisionDataset("mnist", "MNIST", 1), "MNIST 28x28 digits (torchvision layout)"),
    (
        TorchvisionDataset("fashion_mnist", "FashionMNIST", 1),
        "Fashion-MNIST 28x28 clothing (torchvision layout)",
    ),
    (TorchvisionDataset("cifar10", "CIFAR10", 3), "CIFAR-10 32x32 RGB (torchvision layout)"),
    (TorchvisionDataset("cifar100", "CIFAR100", 3), "CIFAR-100 32x32 RGB (torchvision layout)"),
):
    _register(_spec, _description)

__all__ = ["DOWNLOAD_TIMEOUT_S", "TorchvisionDataset", "TorchvisionOptions"]
