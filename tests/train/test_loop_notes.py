"""What a run's ``notes`` say about settings the trainer could not honour as configured."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.train import TrialConfig, train
from automl.train.hyperparameters import flat_config

TIMINGS = {"latency_ms", "batch_latency_ms"}


@pytest.fixture(scope="module")
def skewed() -> ImageData:
    """Digits cut to 30 training images a class, class 0 to 10: ``undersample`` draws
    10 of each of the 10 classes, 100 images an epoch, from 280."""
    full = load_dataset("digits")
    keep = torch.zeros(len(full.train_y), dtype=torch.bool)
    for cls in range(10):
        members = torch.nonzero(full.train_y == cls).flatten()
        keep[members[: 10 if cls == 0 else 30]] = True
    return dataclasses.replace(
        full,
        train_x=full.train_x[keep],
        train_y=full.train_y[keep],
        val_x=full.val_x[:100],
        val_y=full.val_y[:100],
    )


def config(batch_size: int, **overrides: object) -> TrialConfig:
    values: dict[str, object] = {"epochs": 2, "width": 4, "depth": 1, "batch_size": batch_size}
    return flat_config(values | overrides)


def without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def test_a_batch_size_above_an_undersampled_epoch_is_noted_as_cut(skewed: ImageData) -> None:
    """Batches of 256 and 1024 both trained as one batch of the epoch's 100 images."""
    fits = train(config(96, imbalance="undersample"), data=skewed)
    large = train(config(256, imbalance="undersample"), data=skewed)
    larger = train(config(1024, imbalance="undersample"), data=skewed)
    assert "batch_size" not in fits.notes
    assert large.notes["batch_size"] == "cut from 256 to 100, the images in one epoch"
    assert larger.notes["batch_size"] == "cut from 1024 to 100, the images in one epoch"
    assert without_timings(large.history) == without_timings(larger.history)


def test_a_batch_size_above_the_training_split_is_noted_as_cut(skewed: ImageData) -> None:
    assert len(skewed.train_y) == 280
    result = train(config(512, epochs=1), data=skewed)
    assert result.notes["batch_size"] == "cut from 512 to 280, the images in one epoch"
    assert "batch_size" not in train(config(280, epochs=1), data=skewed).notes
