"""Settings read from the environment, and their reuse between calls."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

import automl.config
from automl.config import (
    PILLOWS_DEFAULT_PIXELS,
    Limits,
    Settings,
    current_settings,
    settings_error,
)


def test_current_settings_follow_the_environment_and_read_it_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[Settings] = []

    class Counting(Settings):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(automl.config, "Settings", Counting)
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "one"))
    assert current_settings().cache_dir == tmp_path / "one"
    assert current_settings().cache_dir == tmp_path / "one"
    assert len(made) == 1  # unchanged environment: not read again

    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "two"))
    assert current_settings().cache_dir == tmp_path / "two"
    monkeypatch.setenv("automl_data_root", str(tmp_path / "data"))  # any case, as Settings
    assert current_settings().data_root == tmp_path / "data"
    assert len(made) == 3


def test_a_change_to_the_current_settings_stays_with_the_caller() -> None:
    mine = current_settings()
    mine.cache_dir = Path("elsewhere")
    assert current_settings().cache_dir != Path("elsewhere")


def test_invalid_settings_are_refused_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_PORT", "0")
    for _ in range(2):
        with pytest.raises(ValueError, match="port"):
            current_settings()


@pytest.mark.parametrize("name", ["heartbeat_interval", "grace_period", "reap_interval"])
def test_intervals_past_a_week_are_refused(name: str) -> None:
    """1e10 s once killed the heartbeat and reaper threads (``OverflowError`` in a wait)."""
    with pytest.raises(ValidationError, match="less than or equal to 604800"):
        Settings(**{name: 1e10})


def test_a_rule_between_settings_names_their_variables() -> None:
    """The CLI prints it as is: once ``grace_period (5 s) must exceed twice ...``, now in the
    ``NAME=value: problem`` form of the other settings."""
    with pytest.raises(ValidationError) as refused:
        Settings(grace_period=5)

    assert settings_error(refused.value) == (
        "AUTOML_GRACE_PERIOD=5: must exceed twice AUTOML_HEARTBEAT_INTERVAL (10 s), or "
        "live workers would be reaped"
    )


def test_a_limit_is_named_by_its_variable_and_a_flag_by_itself() -> None:
    with pytest.raises(ValidationError) as limit:
        Limits(max_trials=-5)
    with pytest.raises(ValidationError) as flag:
        Settings(threads=0)

    assert settings_error(limit.value).startswith("AUTOML_LIMIT_MAX_TRIALS=-5: Input should be")
    assert settings_error(flag.value, {"threads": "--threads"}) == (
        "--threads 0: Input should be greater than or equal to 1"
    )


def test_a_pixel_limit_past_the_one_pillow_keeps_is_refused() -> None:
    ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    with pytest.raises(ValidationError) as refused:
        Limits(max_image_pixels=ceiling + 1)

    assert Limits(max_image_pixels=ceiling).max_image_pixels == ceiling
    assert settings_error(refused.value) == (
        f"AUTOML_LIMIT_MAX_IMAGE_PIXELS={ceiling + 1}: Input should be at most {ceiling} "
        "(Pillow opens no larger image)"
    )


def test_pillows_default_limit_is_the_one_limits_skip_importing_pillow_for() -> None:
    assert PILLOWS_DEFAULT_PIXELS == Image.MAX_IMAGE_PIXELS
