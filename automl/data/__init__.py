"""Datasets: sources registered by name, loaded as train/validation tensors."""

from automl.data import digits as _digits  # noqa: F401  (registers "digits")
from automl.data.base import (
    DATASETS,
    DatasetLoader,
    DatasetOptions,
    ImageData,
    load_dataset,
    register_dataset,
)
from automl.data.splits import stratified_split

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "DatasetOptions",
    "ImageData",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
