"""scikit-learn's bundled ``digits`` dataset: 1,797 8x8 grayscale digits, 10 classes."""

from __future__ import annotations

import torch
from pydantic import Field

from automl.data.base import (
    DatasetOptions,
    ImageData,
    channel_stats,
    options_fingerprint,
    register_dataset,
)
from automl.data.splits import stratified_split


class DigitsOptions(DatasetOptions):
    """Options of the ``digits`` dataset."""

    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share held out for validation.")
    seed: int = Field(0, description="Seed of the stratified split.")


@register_dataset(
    "digits", DigitsOptions, description="scikit-learn's 1,797 8x8 digits, no download"
)
def load_digits(options: DigitsOptions) -> ImageData:
    """Loads digits (shipped with scikit-learn, no download) as uint8 (0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    scaled = torch.tensor(bunch.images, dtype=torch.float32).mul_(255.0 / 16.0).round_()
    images = scaled.to(torch.uint8).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, val_idx = stratified_split(labels, options.val_fraction, options.seed)
    mean, std = channel_stats(images[train_idx])
    return ImageData(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        val_x=images[val_idx],
        val_y=labels[val_idx],
        classes=tuple(str(name) for name in bunch.target_names),
        mean=mean,
        std=std,
        fingerprint=options_fingerprint("digits", options),
    )
