"""``TrialConfig`` read back from a trial: its dataset options name data that may be gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from automl.train.trial_config import TrialConfig, stored_config


def test_a_stored_config_validates_without_its_dataset_folder(data_root: Path) -> None:
    (data_root / "gone" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(data_root / "gone" / "cat" / "a.png")
    (data_root / "gone" / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(data_root / "gone" / "dog" / "a.png")
    dataset = {"source": "image_folder", "options": {"path": "gone", "size": 16}}
    raw = TrialConfig.model_validate({"dataset": dataset, "lr": 0.01}).model_dump(mode="json")
    shutil.rmtree(data_root / "gone")

    with pytest.raises(ValidationError, match="folder 'gone' not found"):
        TrialConfig.model_validate(raw)  # a new trial still needs the data
    config = stored_config(raw)

    assert config.model_dump(mode="json") == raw
    assert config.model.options == TrialConfig.model_validate({}).model.options


def test_a_stored_config_still_checks_everything_else() -> None:
    with pytest.raises(ValidationError, match="no_such_source"):
        stored_config({"dataset": {"source": "no_such_source"}})
    with pytest.raises(ValidationError, match="lr"):
        stored_config({"lr": -1})
