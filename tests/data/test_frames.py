"""The frame_sequences source: layout, frame order, frame count and stride, errors."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from automl.data import DatasetError, forget_loaded, load_dataset
from automl.data.frames import FrameSequencesOptions, plan_frame_sequences
from automl.spec import SpecError, validate_spec
from tests.data.conftest import write_image


def write_clip(folder: Path, values: list[int]) -> None:
    """One frame per value, a flat gray image of that value, named frame0, frame1, ..."""
    for i, value in enumerate(values):
        write_image(folder / f"frame{i}.png", np.full((4, 4), value, np.uint8))


def test_clips_load_in_natural_frame_order_with_stride(data_root: Path) -> None:
    for cls in ("a", "b"):
        for clip in range(3):
            write_clip(data_root / "clips" / cls / f"c{clip}", [10 * i + clip for i in range(12)])
    options = {"path": "clips", "size": 4, "channels": "grayscale", "frames": 4, "stride": 3}
    data = load_dataset("frame_sequences", {**options, "val_fraction": 0.34})
    assert data.train_x.shape[1:] == (4, 1, 4, 4) and data.input_shape == (4, 1, 4, 4)
    assert data.train_x.dtype == torch.uint8
    assert len(data.train_y) + len(data.val_y) == 6
    clip = data.train_x[0, :, 0, 0, 0].tolist()
    offset = clip[0]
    assert clip == [offset, offset + 30, offset + 60, offset + 90]  # frame10 after frame9


def test_short_clip_repeats_its_last_frame(data_root: Path) -> None:
    write_clip(data_root / "clips" / "a" / "short", [5, 6])
    write_clip(data_root / "clips" / "b" / "long", [1, 2, 3, 4])
    options = {
        "path": "clips",
        "size": 4,
        "channels": "grayscale",
        "frames": 4,
        "val_fraction": 0.5,
    }
    with pytest.raises(DatasetError, match=r"^frame_sequences: the validation split has no"):
        load_dataset("frame_sequences", options)  # one clip per class cannot be split
    write_clip(data_root / "clips" / "a" / "short2", [5, 6])
    write_clip(data_root / "clips" / "b" / "long2", [1, 2, 3, 4])
    data = load_dataset("frame_sequences", options)
    clips = torch.cat([data.train_x, data.val_x])[:, :, 0, 0, 0].tolist()
    assert [5, 6, 6, 6] in clips and [1, 2, 3, 4] in clips


CLIP_MODEL = {"model": "frame_pool"}
"""A model that takes clips (the default cnn would be one more error)."""


def test_submit_errors(data_root: Path) -> None:
    write_clip(data_root / "clips" / "a" / "c0", [1])
    (data_root / "clips" / "b").mkdir()
    (data_root / "noframes" / "a" / "c0").mkdir(parents=True)
    for path, message in {
        "clips": "dataset.options.path: class 'b' has no clip folders in 'clips'",
        "noframes": "dataset.options.path: clip 'noframes/a/c0' has no frames",
        "nowhere": "dataset.options.path: folder 'nowhere' not found under the data root "
        "(AUTOML_DATA_ROOT; a spec's paths are relative to it)",
    }.items():
        with pytest.raises(SpecError) as caught:
            validate_spec(
                {
                    "name": "x",
                    "dataset": {"source": "frame_sequences", "options": {"path": path}},
                    "fixed": CLIP_MODEL,
                }
            )
        assert [str(error) for error in caught.value.errors] == [message]


def test_a_single_class_is_refused_at_submit(data_root: Path) -> None:
    write_clip(data_root / "mono" / "a" / "c0", [1, 2])
    write_clip(data_root / "mono" / "a" / "c1", [3, 4])
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {
                "name": "x",
                "dataset": {"source": "frame_sequences", "options": {"path": "mono"}},
                "fixed": CLIP_MODEL,
            }
        )
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.path: folder 'mono' needs at least 2 classes (found 1: 'a')"
    ]


def test_splits_that_share_frames_are_refused(data_root: Path) -> None:
    for cls in ("a", "b"):
        write_clip(data_root / "clips" / cls / "c0", [1, 2])
    with pytest.raises(SpecError) as caught:
        validate_spec(
            {
                "name": "x",
                "dataset": {
                    "source": "frame_sequences",
                    "options": {"path": "clips", "val_path": "clips"},
                },
                "fixed": CLIP_MODEL,
            }
        )
    assert [str(error) for error in caught.value.errors] == [
        "dataset.options.val_path: shares 4 images with path ('clips/a/c0/frame0.png', "
        "'clips/a/c0/frame1.png', ...); a split must not hold another split's images"
    ]


def decodes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding ")]


def test_each_frame_count_and_stride_keeps_its_own_cache_file(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once frames 4, then 2, then 4 decoded every time, each replacing the last's file."""
    caplog.set_level(logging.INFO, logger="automl.data")
    for cls in ("a", "b"):
        for clip in range(2):
            write_clip(data_root / "clips" / cls / f"c{clip}", [1, 2, 3, 4, 5])
    options = {"path": "clips", "size": 4, "channels": "grayscale", "val_path": "clips"}
    for frames, stride in ((4, 1), (2, 1), (4, 1), (2, 2), (2, 1)):
        forget_loaded()
        data = load_dataset("frame_sequences", {**options, "frames": frames, "stride": stride})
        assert data.train_x.shape[1] == frames
    assert len(decodes(caplog)) == 2 * 3  # train and val, for each of the 3 selections
    assert not any("removing stale" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2 * 3


def test_the_shared_cache_file_of_earlier_versions_is_removed(
    data_root: Path, tmp_path: Path
) -> None:
    """Before frames and stride had their own slots, every selection shared one."""
    for cls in ("a", "b"):
        write_clip(data_root / "clips" / cls / "c0", [1, 2])
        write_clip(data_root / "clips" / cls / "c1", [1, 2])
    options = FrameSequencesOptions(path="clips", size=4, frames=2, val_fraction=0.5)
    unit = plan_frame_sequences(options).train
    shared = replace(unit, selection="").slot
    assert shared != unit.slot
    (tmp_path / "cache").mkdir()
    earlier = tmp_path / "cache" / f"{shared}-{'0' * 32}.pt"
    earlier.write_bytes(b"an earlier version's decoded clips")
    load_dataset("frame_sequences", options.model_dump())
    assert not earlier.exists()


def test_automl_folders_inside_the_clip_folder_are_no_class(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in ("a", "b"):
        write_clip(data_root / cls / "c0", [1, 2])
        write_clip(data_root / cls / "c1", [1, 2])
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(data_root / "cache"))
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(data_root / "artifacts"))
    (data_root / "artifacts" / "1").mkdir(parents=True)
    options = {"path": ".", "size": 4, "frames": 2, "val_fraction": 0.5}
    assert load_dataset("frame_sequences", options).classes == ("a", "b")
    forget_loaded()
    assert load_dataset("frame_sequences", options).classes == ("a", "b")
