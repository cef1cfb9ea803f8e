"""Dataset containers and the dataset registry."""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from automl.config import current_settings
from automl.data.errors import DatasetError
from automl.registry import EntryOptions, Registry


class DatasetOptions(EntryOptions):
    """Base class of a dataset's options; unknown options are rejected."""

    @classmethod
    def channels_of(cls, options: Mapping[str, Any]) -> int | None:
        """How many color channels the images of a spec's ``options`` have, where that is
        known before loading them (None: only loading tells)."""
        return None


@dataclass(frozen=True)
class ImageData:
    """An image-classification dataset: train and validation splits, optionally a test split.

    Images are uint8 tensors, ``(N, C, H, W)`` for still images or ``(N, T, C, H, W)`` for
    frame sequences; labels are int64 ``(N,)``. They stay uint8 until ``normalize`` turns a
    batch into floats on whatever device the batch is on.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]
    mean: torch.Tensor
    """Per-channel mean of the training split on the 0-1 scale, float32 ``(C,)``."""
    std: torch.Tensor
    """Per-channel standard deviation of the training split on the 0-1 scale, ``(C,)``."""
    fingerprint: str
    """Identifies the data and split by their listing (paths, sizes, modification times,
    options), not their pixels: a file replaced by one of the same size and time keeps it."""
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)``, or ``(T, C, H, W)`` for frame sequences."""
        return tuple(int(size) for size in self.train_x.shape[1:])

    @property
    def has_test(self) -> bool:
        """Whether the dataset has a test split."""
        return self.test_x is not None

    def unscored_classes(self) -> dict[str, list[str]]:
        """The classes that no validation (``no_validation_images``) or test image
        (``no_test_images``) scores, e.g. one whose single image a stratified split kept
        in training: the metrics say nothing about them (balanced accuracy leaves them
        out); and those with no training image (``no_training_images``, where explicit
        splits hold a class that training lacks), which the model never learns."""
        notes: dict[str, list[str]] = {}
        splits = (
            ("no_training_images", self.train_y),
            ("no_validation_images", self.val_y),
            ("no_test_images", self.test_y),
        )
        for key, labels in splits:
            if labels is None:
                continue
            counts = torch.bincount(labels.cpu(), minlength=self.num_classes).tolist()
            missing = [name for index, name in enumerate(self.classes) if counts[index] == 0]
            if missing:
                notes[key] = missing
        return notes

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Turns a uint8 batch into normalized float32 on the batch's own device.

        ``x / 255`` then per-channel ``(x - mean) / std``; call it on the device, after
        indexing, so only uint8 crosses memory.
        """
        return self.standardize(self.to_unit(images))

    @staticmethod
    def to_unit(images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as float32 in [0, 1] (what augmentations work on)."""
        return images.float().div_(255.0)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """Per-channel ``(x - mean) / std`` of a [0, 1] float batch, in place."""
        # (C, 1, 1) broadcasts over (N, C, H, W) and (N, T, C, H, W) alike.
        mean = self.mean.to(images.device).view(-1, 1, 1)
        std = self.std.to(images.device).view(-1, 1, 1)
        return images.sub_(mean).div_(std)

    def to(self, device: torch.device | str) -> ImageData:
        """Returns a copy whose tensors live on ``device``."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return ImageData(
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            classes=self.classes,
            mean=self.mean.to(device),
            std=self.std.to(device),
            fingerprint=self.fingerprint,
            test_x=move(self.test_x),
            test_y=move(self.test_y),
        )


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the 0-1 scale.

    Works in chunks, so memory stays small for large datasets: each image row of a
    channel is summed in float32, the rows' sums in float64. A channel without variation
    gets a standard deviation of 1 (normalizing then only centers it).

    Args:
        images: uint8 ``(N, C, H, W)`` or ``(N, T, C, H, W)``.
        chunk: Samples per chunk.

    Returns:
        ``(mean, std)``, float32 tensors shaped ``(C,)``.
    """
    channels, height, width = images.shape[-3:]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        rows = images[start : start + chunk].reshape(-1, channels, height, width).float()
        total += rows.sum(dim=-1).double().sum(dim=(0, 2))
        squares += rows.square_().sum(dim=-1).double().sum(dim=(0, 2))
    count = images.numel() // channels if channels else 0
    if count == 0:
        return torch.zeros(channels), torch.ones(channels)
    mean = total.double() / (count * 255.0)
    std = (squares.double() / (count * 255.0**2) - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return mean.float(), std.float()


def options_fingerprint(source: str, options: EntryOptions, *extra: object) -> str:
    """A stable hash of a source's name, its options and any extra JSON-able values."""
    payload = json.dumps(
        [source, options.model_dump(mode="json"), *extra], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class DatasetSource:
    """What a registered dataset provides: a loader and a cheap fingerprint.

    ``fingerprint(options)`` must be cheap (no decoding) and change whenever the data
    ``load(options)`` would return changes; it keys the per-process cache.
    """

    load: Callable[[Any], ImageData]
    fingerprint: Callable[[Any], str]
    samples: str = "images"
    """``images`` (samples ``(C, H, W)``) or ``clips`` (``(T, C, H, W)``)."""


DATASETS: Registry[DatasetSource] = Registry("dataset", group="automl.datasets")


def register_dataset(
    name: str,
    options: type[DatasetOptions],
    fingerprint: Callable[[Any], str] | None = None,
    description: str | None = None,
    samples: str = "images",
) -> Callable[[Callable[[Any], ImageData]], Callable[[Any], ImageData]]:
    """Registers a loader ``load(options) -> ImageData`` under ``name``.

    Args:
        name: The ``dataset.source`` name.
        options: The pydantic model of the loader's options.
        fingerprint: ``fingerprint(options) -> str``; by default a hash of the name and
            options (right for sources whose data never changes, such as ``digits``).
        description: One line for users; defaults to the loader's docstring.
        samples: What its samples are: ``images`` ``(C, H, W)`` or ``clips``
            ``(T, C, H, W)``; a study is checked against it at submit.
    """

    def decorator(load: Callable[[Any], ImageData]) -> Callable[[Any], ImageData]:
        def static_fingerprint(opts: Any) -> str:
            return options_fingerprint(name, opts)

        text = description or (inspect.getdoc(load) or "").split("\n")[0]
        source = DatasetSource(load, fingerprint or static_fingerprint, samples)
        DATASETS.add(name, source, options=options, description=text)
        return load

    return decorator


MEMORY_CACHE_SIZE = 2
_loaded: OrderedDict[str, ImageData] = OrderedDict()
_loaded_lock = threading.Lock()

FAILURE_MEMORY_S = 600.0
"""How long a process answers a load of unchanged data that failed on its contents (a
file that does not decode, labels that do not fit) with the same error, instead of
decoding up to the bad file again for every trial."""
_failed: dict[str, tuple[float, str]] = {}


def dataset_fingerprint(source: str, options: dict[str, Any] | None = None) -> str:
    """Identifies a dataset's data and split without decoding it (lists files at most).

    Raises:
        UnknownNameError: If ``source`` is not registered.
        pydantic.ValidationError: If the options are invalid.
        DatasetError: If the data cannot be listed.
    """
    entry = DATASETS.get(source)
    return entry.factory.fingerprint(entry.parse_options(options))


def load_dataset(source: str, options: dict[str, Any] | None = None) -> ImageData:
    """Loads a registered dataset; a process keeps the last few in memory.

    A dataset already in memory is reused only while its fingerprint (for file sources:
    the file list, sizes and modification times) still matches.

    Args:
        source: Registered dataset name, e.g. ``"digits"``.
        options: Options validated by the dataset's options model.

    Returns:
        The splits as uint8 tensors, on the CPU.

    Raises:
        UnknownNameError: If ``source`` is not registered.
        pydantic.ValidationError: If the options are invalid.
        DatasetError: If the data cannot be read (the message names the file).
    """
    entry = DATASETS.get(source)
    parsed = entry.parse_options(options)
    settings = current_settings()
    key = f"{entry.factory.fingerprint(parsed)}:{settings.data_root}:{settings.cache_dir}"
    with _loaded_lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        failed = _failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILURE_MEMORY_S:
            raise DatasetError(failed[1])
    try:
        data = entry.factory.load(parsed)
    except DatasetError as exc:
        cause = exc.__context__
        if isinstance(cause, OSError) and cause.errno is not None:
            raise  # permissions, a full disk, a network: fixed without touching the files
        # The key covers every file's size and time: fixing or removing the file loads anew.
        with _loaded_lock:
            _failed.clear()  # one failure remembered, so the dict never grows
            _failed[key] = (time.monotonic(), str(exc))
        raise
    with _loaded_lock:
        _failed.pop(key, None)
        _loaded[key] = data
        while len(_loaded) > MEMORY_CACHE_SIZE:
            _loaded.popitem(last=False)
    return data


def forget_loaded() -> None:
    """Drops the datasets this process keeps in memory (the disk cache stays)."""
    with _loaded_lock:
        _loaded.clear()
        _failed.clear()
