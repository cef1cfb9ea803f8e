"""Images or clips: a spec whose entries cannot take its dataset's samples is refused at
submit (each combination below once passed submit and failed every trial with a shape
error from inside torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automl.examples import write_moving_shapes
from automl.sample_kinds import CLIPS, IMAGES, dataset_samples, takes
from automl.spec import SpecError, validate_spec

CLIP_DATA = {"source": "frame_sequences", "options": {"path": "clips", "size": 8, "frames": 2}}


@pytest.fixture
def clips(data_root: Path) -> Path:
    write_moving_shapes(data_root / "clips", clips=3, frames=2, size=8, seed=0)
    return data_root / "clips"


def errors_of(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "x", **spec})
    return {error.path: error.msg for error in caught.value.errors}


def test_datasets_and_entries_say_what_they_take() -> None:
    assert (dataset_samples("digits"), dataset_samples("frame_sequences")) == (IMAGES, CLIPS)
    assert dataset_samples("no_such_source") is None
    assert takes("model", "cnn", IMAGES) and not takes("model", "cnn", CLIPS)
    assert takes("model", "frame_rnn", CLIPS) and not takes("model", "frame_rnn", IMAGES)
    assert takes("imbalance", "oversample", CLIPS) and not takes("imbalance", "gan", CLIPS)
    assert not takes("augment", "hflip", CLIPS) and takes("augment", "hflip", IMAGES)
    assert takes("optimizer", "adam", CLIPS)


@pytest.mark.usefixtures("clips")
def test_clips_with_the_default_model_are_refused_where_the_model_would_be_set() -> None:
    errors = errors_of({"dataset": CLIP_DATA})

    assert list(errors) == ["fixed.model"]
    assert errors["fixed.model"] == (
        "the default model 'cnn' takes images (C, H, W); dataset 'frame_sequences' gives "
        "clips (T, C, H, W): use frame_pool, frame_rnn"
    )


@pytest.mark.usefixtures("clips")
def test_clips_name_each_image_model_augmentation_and_strategy() -> None:
    models = {"type": "categorical", "choices": ["cnn", "frame_pool", "rnn"]}
    errors = errors_of(
        {
            "dataset": CLIP_DATA,
            "fixed": {"imbalance": "gan", "hflip.p": 0.5, "erasing.p": 0},
            "params": {"model": models, "mixup.p": {"type": "float", "low": 0.1, "high": 1}},
        }
    )

    assert sorted(errors) == [
        "fixed.hflip.p",
        "fixed.imbalance",
        "params.mixup.p",
        "params.model.choices[0]",
        "params.model.choices[2]",
    ]
    assert "augmentation 'hflip' takes images (C, H, W)" in errors["fixed.hflip.p"]
    assert errors["fixed.imbalance"].endswith(
        "use class_weights, focal, none, oversample, undersample"
    )


def test_a_clip_model_on_images_is_refused() -> None:
    errors = errors_of({"fixed": {"model": "frame_rnn"}})

    assert errors["fixed.model"].startswith(
        "model 'frame_rnn' takes clips (T, C, H, W); dataset 'digits' gives images (C, H, W): "
        "use cnn, "
    )


@pytest.mark.usefixtures("clips")
def test_what_fits_clips_is_accepted() -> None:
    spec = validate_spec(
        {
            "name": "x",
            "dataset": CLIP_DATA,
            "fixed": {
                "model": "frame_rnn",
                "imbalance": "oversample",
                "erasing.p": 0,
                "mixup.p": 0,  # it never runs
            },
            "params": {"loss": {"type": "categorical", "choices": ["cross_entropy", "focal"]}},
        }
    )

    assert spec.fixed["model"] == "frame_rnn"
