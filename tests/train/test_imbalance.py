"""The imbalance strategies as the trainer uses them: plans, and whole runs on skewed data."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from automl.data import ImageData, load_dataset
from automl.models import build_model
from automl.train import IMBALANCE, train
from automl.train.hyperparameters import flat_config
from automl.train.imbalance import LocalArtifactCache, TrainSplit, build_imbalance_plan
from automl.train.losses import FocalLoss


@pytest.fixture(scope="module")
def skewed() -> ImageData:
    """Digits with classes 3, 5 and 8 cut to 8 training images each."""
    full = load_dataset("digits")
    keep = torch.ones(len(full.train_y), dtype=torch.bool)
    for cls in (3, 5, 8):
        members = torch.nonzero(full.train_y == cls).flatten()
        keep[members[8:]] = False
    return replace(full, train_x=full.train_x[keep], train_y=full.train_y[keep])


def split_of(data: ImageData, tmp_path: Path, seed: int = 0) -> TrainSplit:
    return TrainSplit(
        data.train_x,
        data.train_y,
        data.num_classes,
        seed=seed,
        fingerprint=data.fingerprint,
        cache=LocalArtifactCache(tmp_path),
    )


def test_resampling_plans_balance_each_epoch(skewed: ImageData, tmp_path: Path) -> None:
    split = split_of(skewed, tmp_path)
    counts = torch.bincount(skewed.train_y, minlength=10)
    for name, per_class in (("oversample", int(counts.max())), ("undersample", 8)):
        plan = build_imbalance_plan(name, {}, split)
        assert plan.sampler is not None and plan.epoch_size == 10 * per_class
        first = plan.sampler(1, torch.Generator().manual_seed(0))
        second = plan.sampler(2, torch.Generator().manual_seed(1))
        assert len(first) == plan.epoch_size
        assert torch.bincount(skewed.train_y[first], minlength=10).tolist() == [per_class] * 10
        assert not torch.equal(first, second)


def test_undersampling_says_how_much_it_keeps_and_warns_when_little(
    skewed: ImageData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rare class of a few images left every epoch that many per class, silently."""
    plan = build_imbalance_plan("undersample", {}, split_of(skewed, tmp_path))

    assert plan.notes == {"undersample_per_class": 8, "undersample_of": len(skewed.train_y)}
    assert "undersample keeps 8 image(s) of each class per epoch" in caplog.text

    caplog.clear()
    full = load_dataset("digits")
    build_imbalance_plan("undersample", {}, split_of(full, tmp_path))
    assert "undersample keeps" not in caplog.text


def test_weighting_plans(skewed: ImageData, tmp_path: Path) -> None:
    split = split_of(skewed, tmp_path)
    inverse = build_imbalance_plan("class_weights", {}, split).class_weights
    effective = build_imbalance_plan(
        "class_weights", {"weighting": "effective_number", "beta": 0.99}, split
    ).class_weights
    assert inverse is not None and effective is not None
    for weights in (inverse, effective):
        assert weights[3] > weights[0] and weights[5] > weights[1]
    focal = build_imbalance_plan("focal", {"focal_gamma": 1.5}, split)
    assert isinstance(focal.loss, FocalLoss) and focal.loss.gamma == 1.5
    assert focal.loss.alpha is not None and focal.loss.alpha[8] > focal.loss.alpha[0]


def test_gan_is_trained_once_and_reused(skewed: ImageData, tmp_path: Path) -> None:
    split = split_of(skewed, tmp_path)
    options = {"gan_steps": 3, "target_ratio": 0.5}
    first = build_imbalance_plan("gan", options, split)
    again = build_imbalance_plan("gan", options, split)
    assert first.notes["gan_trained_here"] is True
    assert again.notes["gan_trained_here"] is False
    assert first.notes["gan_train_seconds"] == again.notes["gan_train_seconds"] > 0
    assert first.extra_images is not None and first.extra_labels is not None
    assert first.extra_images.dtype == torch.uint8
    assert first.extra_images.shape[1:] == skewed.train_x.shape[1:]
    target = round(int(torch.bincount(skewed.train_y).max()) * 0.5)
    assert torch.bincount(first.extra_labels, minlength=10)[3] == target - 8
    assert set(first.extra_labels.tolist()) == {3, 5, 8}
    assert torch.equal(first.extra_images, again.extra_images)


@pytest.mark.parametrize("strategy", IMBALANCE.names())
def test_every_strategy_trains(strategy: str, skewed: ImageData, tmp_path: Path) -> None:
    options = {"gan_steps": 2} if strategy == "gan" else {}
    config = flat_config(
        {"imbalance": strategy, "epochs": 1, "width": 8, "depth": 1, "batch_size": 64, **options}
    )
    result = train(config, data=skewed, artifacts=LocalArtifactCache(tmp_path))
    assert math.isfinite(result.metrics["balanced_accuracy"])
    if strategy == "gan":
        assert result.notes["gan_samples"] > 0


def test_frozen_backbone_trains_only_the_head(skewed: ImageData) -> None:
    frozen = flat_config({"epochs": 1, "width": 8, "depth": 2, "freeze": "backbone"})
    free = flat_config({"epochs": 1, "width": 8, "depth": 2})
    # Same seed, same initialization as the trainer's.
    torch.manual_seed(0)
    initial = build_model("cnn", free.model.options, skewed.input_shape, 10).state_dict()
    after_frozen = train(frozen, data=skewed).state_dict
    after_free = train(free, data=skewed).state_dict
    assert torch.equal(after_frozen["0.0.0.weight"], initial["0.0.0.weight"])
    assert not torch.equal(after_frozen["1.0.weight"], initial["1.0.weight"])
    assert not torch.equal(after_free["0.0.0.weight"], initial["0.0.0.weight"])


def test_trials_with_other_seeds_reuse_the_generator_and_draw_other_samples(
    skewed: ImageData, tmp_path: Path
) -> None:
    """The generator is keyed by ``gan_seed``, not the trial's seed (each trial of a study
    has its own), so it is trained once per study; the samples follow the trial's seed."""
    options = {"gan_steps": 3, "target_ratio": 0.5}
    first = build_imbalance_plan("gan", options, split_of(skewed, tmp_path, seed=1))
    other = build_imbalance_plan("gan", options, split_of(skewed, tmp_path, seed=2))
    assert (first.notes["gan_trained_here"], other.notes["gan_trained_here"]) == (True, False)
    assert first.extra_images is not None and other.extra_images is not None
    assert not torch.equal(first.extra_images, other.extra_images)
    retrained = build_imbalance_plan("gan", {**options, "gan_seed": 1}, split_of(skewed, tmp_path))
    assert retrained.notes["gan_trained_here"] is True
