"""scikit-learn's bundled ``digits`` dataset: 1,797 8x8 grayscale digits, 10 classes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, model_validator

from automl.data.base import (
    DatasetOptions,
    ImageData,
    channel_stats,
    options_fingerprint,
    register_dataset,
)
from automl.data.splits import SplitSeed, stratified_split


class DigitsOptions(DatasetOptions):
    """Options of the ``digits`` dataset."""

    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share held out for validation.")
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share held out for testing (0: no test split)."
    )
    seed: SplitSeed = Field(0, description="Seed of the stratified split.")

    @classmethod
    def channels_of(cls, options: Mapping[str, Any]) -> int | None:
        """Grayscale."""
        return 1

    @model_validator(mode="after")
    def _check_fractions(self) -> DigitsOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


def digits_fingerprint(options: DigitsOptions) -> str:
    """Identifies the split; without a test split it is the fingerprint from before
    ``test_fraction`` existed, so earlier studies still match ``warm_start: auto``."""
    if options.test_fraction > 0:
        return options_fingerprint("digits", options)
    kept = options.model_dump(mode="json", exclude={"test_fraction"})
    payload = json.dumps(["digits", kept], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@register_dataset(
    "digits",
    DigitsOptions,
    fingerprint=digits_fingerprint,
    description="scikit-learn's 1,797 8x8 digits, no download",
)
def load_digits(options: DigitsOptions) -> ImageData:
    """Loads digits (shipped with scikit-learn, no download) as uint8 (0-16 scaled to 0-255).

    With ``test_fraction`` a stratified test split is held out first; validation then takes
    ``val_fraction`` of all images from the rest.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    scaled = torch.tensor(bunch.images, dtype=torch.float32).mul_(255.0 / 16.0).round_()
    images = scaled.to(torch.uint8).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    test_x = test_y = None
    if options.test_fraction > 0:
        keep, test_idx = stratified_split(labels, options.test_fraction, options.seed)
        test_x, test_y = images[test_idx], labels[test_idx]
        images, labels = images[keep], labels[keep]
    val_share = options.val_fraction / (1.0 - options.test_fraction)
    train_idx, val_idx = stratified_split(labels, val_share, options.seed)
    mean, std = channel_stats(images[train_idx])
    return ImageData(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        val_x=images[val_idx],
        val_y=labels[val_idx],
        classes=tuple(str(name) for name in bunch.target_names),
        mean=mean,
        std=std,
        fingerprint=digits_fingerprint(options),
        test_x=test_x,
        test_y=test_y,
    )
