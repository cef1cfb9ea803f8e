"""``frame_sequences``: short clips of ordered frames, one subfolder per clip, per class.

Layout: ``<path>/<class>/<clip>/<frames>``. Frames are ordered by name with numbers
compared by value (``frame2`` before ``frame10``). A sample is ``frames`` frames taken
every ``stride`` frames from the start of the clip; a clip too short for that repeats
its last frame. Samples are shaped ``(T, C, H, W)``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from automl.data.base import ImageData, register_dataset
from automl.data.cache import DecodeUnit
from automl.data.errors import DatasetError
from automl.data.files import (
    SPLIT_FRACTION_RULES,
    FilePlan,
    ImageOptions,
    Side,
    check_drawn_splits,
    check_split_folder,
    load_plan,
    make_unit,
    require_classes,
    require_distinct_classes,
)
from automl.data.paths import (
    confine,
    data_root,
    image_files,
    relative_name,
    require_dir,
    subfolders,
)
from automl.registry import within_strict_input

Clip = list[Path]


class FrameSequencesOptions(ImageOptions):
    """Options of ``frame_sequences``. Paths are relative to the data root."""

    APPLIES_WHEN = SPLIT_FRACTION_RULES

    size: Side | tuple[Side, Side] = Field(
        32, description="Frame size in pixels: one number (square) or [height, width]."
    )
    frames: int = Field(8, ge=1, le=256, description="Frames per sample (T).")
    stride: int = Field(1, ge=1, le=64, description="Take every stride-th frame of a clip.")
    path: str = Field(description="Folder of class folders, each holding one folder per clip.")
    val_path: str | None = Field(None, description="Validation folder (same layout), optional.")
    test_path: str | None = Field(None, description="Test folder (same layout), optional.")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        classes, _ = scan_clip_folder(value)
        require_classes(classes, f"folder {value!r}")
        if within_strict_input():  # at submit: a stored study keeps loading its data
            require_distinct_classes(classes, f"folder {value!r}", "class folders")
        return value

    @field_validator("val_path", "test_path")
    @classmethod
    def _check_split_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        check_split_folder(value, info, scan_clip_folder, _frame_files)
        return value

    def _file_plan(self) -> FilePlan:
        """Lists the files of every given split."""
        return plan_frame_sequences(self)

    @model_validator(mode="after")
    def _check_drawn_splits(self) -> FrameSequencesOptions:
        check_drawn_splits(self, self.val_path, self.test_path, self._class_sizes, "clip")
        return self

    def _class_sizes(self) -> tuple[list[str], list[int]]:
        classes, clips = scan_clip_folder(self.path)
        return classes, [len(found) for found in clips]


def _frame_files(clips: list[list[Clip]]) -> list[Path]:
    """Every frame of every clip, of every class."""
    return [frame for found in clips for clip in found for frame in clip]


def scan_clip_folder(
    value: str, allow_empty_classes: bool = False
) -> tuple[list[str], list[list[Clip]]]:
    """Lists classes, their clips and each clip's frames.

    Raises:
        DatasetError: If the path escapes the data root or is missing, there are no class
            folders, a class has no clips, or a clip has no frames.
    """
    root = data_root()
    folder = confine(value, root)
    require_dir(folder, root)
    class_dirs = subfolders(folder, root)
    if not class_dirs:
        raise DatasetError(
            f"folder {relative_name(folder, root)!r} has no class folders: use "
            "<class>/<clip>/<frame files>"
        )
    clips: list[list[Clip]] = []
    for class_dir in class_dirs:
        class_clips = []
        for clip_dir in subfolders(class_dir, root):
            frames = image_files(clip_dir, root, natural=True)
            if not frames:
                raise DatasetError(f"clip {relative_name(clip_dir, root)!r} has no frames")
            class_clips.append(frames)
        if not class_clips and not allow_empty_classes:
            raise DatasetError(
                f"class {class_dir.name!r} has no clip folders in {relative_name(folder, root)!r}"
            )
        clips.append(class_clips)
    if not any(clips):
        raise DatasetError(f"folder {relative_name(folder, root)!r} has no clips")
    return [class_dir.name for class_dir in class_dirs], clips


def select_frames(clip: Clip, frames: int, stride: int) -> tuple[Path, ...]:
    """``frames`` frames every ``stride`` from the start; short clips repeat the last."""
    return tuple(clip[min(i * stride, len(clip) - 1)] for i in range(frames))


def plan_frame_sequences(options: FrameSequencesOptions) -> FilePlan:
    """Lists the clips of every given folder."""
    root = data_root()
    classes, train_clips = scan_clip_folder(options.path)
    index = {name: i for i, name in enumerate(classes)}

    def clip_unit(value: str, role: str, names: list[str], clips: list[list[Clip]]) -> DecodeUnit:
        samples = [
            select_frames(clip, options.frames, options.stride) for found in clips for clip in found
        ]
        labels = [index[name] for name, found in zip(names, clips, strict=True) for _ in found]
        return make_unit(
            "frame_sequences",
            role,
            confine(value, root),
            root,
            samples,
            labels,
            options.preprocess,
            selection=f"frames={options.frames},stride={options.stride}",
        )

    train = clip_unit(options.path, "train", classes, train_clips)
    extra = {}
    for role, value in (("val", options.val_path), ("test", options.test_path)):
        if value is not None:
            names, clips = scan_clip_folder(value, allow_empty_classes=True)
            extra[role] = clip_unit(value, role, names, clips)
    return FilePlan("frame_sequences", tuple(classes), train, sequences=True, **extra)


def fingerprint_frame_sequences(options: FrameSequencesOptions) -> str:
    """Changes when a frame is added, removed or modified, or an option changes."""
    return plan_frame_sequences(options).fingerprint(options)


@register_dataset(
    "frame_sequences",
    FrameSequencesOptions,
    fingerprint=fingerprint_frame_sequences,
    description="clips of ordered frames: <class>/<clip>/<frames>, samples (T, C, H, W)",
    samples="clips",
)
def load_frame_sequences(options: FrameSequencesOptions) -> ImageData:
    """Loads clips as uint8 ``(N, T, C, H, W)``, decoding through the shared disk cache."""
    return load_plan(plan_frame_sequences(options), options)
