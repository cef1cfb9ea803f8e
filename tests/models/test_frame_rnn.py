"""Sequence models: a per-frame CNN with a GRU/LSTM sees motion that frame pooling cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from automl.data import forget_loaded, load_dataset
from automl.examples import write_moving_shapes
from automl.models import build_model
from automl.train import train
from automl.train.hyperparameters import flat_config


@pytest.fixture
def moving_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A square moving left, right or up: 60 clips per class, 4 frames of 16x16."""
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    forget_loaded()
    write_moving_shapes(tmp_path / "moving", clips=60, frames=4, size=16, seed=0)
    options = {"path": "moving", "size": 16, "frames": 4, "channels": "grayscale"}
    yield load_dataset("frame_sequences", {**options, "val_fraction": 0.25})
    forget_loaded()


def test_lstm_frame_model_shape_and_still_images_refused() -> None:
    options = {"width": 4, "depth": 2, "cell": "lstm"}
    model = build_model("frame_rnn", options, (5, 3, 12, 12), 7)
    assert model(torch.rand(2, 5, 3, 12, 12)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"needs clips \(T, C, H, W\)"):
        build_model("frame_rnn", {}, (3, 12, 12), 7)


def test_sequence_model_solves_motion_that_pooling_cannot(moving_shapes) -> None:
    assert moving_shapes.classes == ("left", "right", "up")
    config = {"width": 8, "depth": 2, "epochs": 8, "lr": 1e-2, "batch_size": 16}
    recurrent = train(flat_config({"model": "frame_rnn", **config}), data=moving_shapes)
    blind = train(flat_config({"model": "frame_pool", **config}), data=moving_shapes)
    # Left and right show the same frames in opposite order: an order-blind model can
    # at best get "up" right and guess between the other two (2/3 accuracy).
    assert recurrent.metrics["accuracy"] >= 0.9
    assert blind.metrics["accuracy"] <= 0.75
    left_right = [row["recall"] for row in blind.per_class[:2]]
    assert min(left_right) < 0.75
