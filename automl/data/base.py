"""Dataset containers and the dataset registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from automl.registry import EntryOptions, Registry


class DatasetOptions(EntryOptions):
    """Base class of a dataset's options; unknown options are rejected."""


@dataclass(frozen=True)
class ImageData:
    """An image-classification dataset split into train and validation tensors.

    Images are float tensors shaped ``(N, C, H, W)``; labels are int64 ``(N,)``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        channels, height, width = self.train_x.shape[1:]
        return int(channels), int(height), int(width)

    def to(self, device: torch.device | str) -> ImageData:
        """Returns a copy whose tensors live on ``device``."""
        return ImageData(
            self.train_x.to(device),
            self.train_y.to(device),
            self.val_x.to(device),
            self.val_y.to(device),
            self.classes,
        )


DatasetLoader = Callable[[Any], ImageData]
"""``load(options) -> ImageData``."""

DATASETS: Registry[DatasetLoader] = Registry("dataset", group="automl.datasets")


def register_dataset(
    name: str, options: type[DatasetOptions]
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Registers a loader ``load(options) -> ImageData`` under ``name``."""
    return DATASETS.register(name, options=options)


def load_dataset(source: str, options: dict[str, Any] | None = None) -> ImageData:
    """Loads a registered dataset, once per process for the same options.

    Args:
        source: Registered dataset name, e.g. ``"digits"``.
        options: Options validated by the dataset's options model.

    Returns:
        The train/validation tensors, on the CPU.
    """
    return _load_cached(source, json.dumps(options or {}, sort_keys=True))


@lru_cache(maxsize=8)
def _load_cached(source: str, options_json: str) -> ImageData:
    entry = DATASETS.get(source)
    return entry.factory(entry.parse_options(json.loads(options_json)))
