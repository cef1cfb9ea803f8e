"""Datasets: sources registered by name, loaded as uint8 train/validation(/test) tensors."""

from automl.data import digits as _digits  # noqa: F401  (registers "digits")
from automl.data import folder as _folder  # noqa: F401  (registers "image_folder")
from automl.data import frames as _frames  # noqa: F401  (registers "frame_sequences")
from automl.data import manifest as _manifest  # noqa: F401  (registers "image_csv")
from automl.data import torchvision_sources as _torchvision  # noqa: F401  (mnist, cifar10...)
from automl.data.base import (
    DATASETS,
    DatasetOptions,
    DatasetSource,
    ImageData,
    channel_stats,
    dataset_fingerprint,
    forget_loaded,
    load_dataset,
    register_dataset,
)
from automl.data.errors import DatasetError
from automl.data.splits import stratified_split

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetOptions",
    "DatasetSource",
    "ImageData",
    "channel_stats",
    "dataset_fingerprint",
    "forget_loaded",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
