"""Dataset containers and the dataset registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from automl.registry import Registry


class DatasetOptions(BaseModel):
    """Base class of a dataset's options; unknown options are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: a loader and the pydantic model of its options."""

    load: Callable[[Any], ImageData]
    options: type[DatasetOptions]


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register_dataset(
    name: str, options: type[DatasetOptions]
) -> Callable[[Callable[[Any], ImageData]], Callable[[Any], ImageData]]:
    """Registers a loader ``load(options) -> ImageData`` under ``name``."""

    def decorator(load: Callable[[Any], ImageData]) -> Callable[[Any], ImageData]:
        DATASETS.add(name, DatasetSource(load, options))
        return load

    return decorator


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
    return entry.load(entry.options.model_validate(json.loads(options_json)))
