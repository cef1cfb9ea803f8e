"""What the file-based sources share: image options, and turning labelled files into data.

A file source (``image_folder``, ``image_csv``, ``frame_sequences``) lists its files into
a ``FilePlan``: the class names and one ``DecodeUnit`` per given split. ``load_plan``
decodes each unit through the disk cache, splits off validation (and test) data when no
explicit folder was given, and computes the normalization statistics on the training split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from automl.data.base import DatasetOptions, ImageData, channel_stats
from automl.data.cache import DecodeUnit, load_unit, units_fingerprint
from automl.data.decode import Preprocess
from automl.data.errors import DatasetError
from automl.data.paths import data_root, real_paths, relative_name
from automl.data.splits import SplitSeed, stratified_split
from automl.registry import within_strict_input

Side = Annotated[int, Field(ge=1, le=2048)]

MIN_CLASSES = 2
"""Classes a dataset needs: with one, every model "predicts" it with accuracy 1.0."""


def require_classes(classes: Sequence[str], what: str) -> None:
    """Checks that ``what`` (e.g. ``"folder 'pets'"``) has at least ``MIN_CLASSES`` classes.

    Raises:
        DatasetError: ``<what> needs at least 2 classes (found 1: 'red')``.
    """
    if len(classes) < MIN_CLASSES:
        found = ", ".join(repr(name) for name in classes)
        raise DatasetError(
            f"{what} needs at least {MIN_CLASSES} classes (found {len(classes)}"
            + (f": {found})" if found else ")")
        )


def check_split_folder(
    value: str,
    info: ValidationInfo,
    scan: Callable[..., tuple[list[str], list[Any]]],
    flatten: Callable[[list[Any]], list[Path]],
) -> None:
    """Checks a ``val_path`` or ``test_path`` folder against the other given folders.

    Its classes must be classes of ``path``; at submit (only, so that a study stored before
    the check keeps loading its data) it must share no file with ``path`` or ``val_path``.

    Args:
        value: The split's folder, as the user wrote it.
        info: The options validated so far (``path`` comes first).
        scan: Lists a folder's classes and what each holds (``scan_class_folder``);
            takes ``allow_empty_classes``.
        flatten: Every file of what ``scan`` listed, in one list.

    Raises:
        DatasetError: If the folder has a class ``path`` lacks, or shares files.
    """
    classes, found = scan(value, allow_empty_classes=True)
    if "path" in info.data:
        train_classes, _ = scan(info.data["path"])
        unknown = sorted(set(classes) - set(train_classes))
        if unknown:
            raise DatasetError(
                f"class folder {unknown[0]!r} is not a class of path; valid classes: "
                + ", ".join(train_classes)
            )
    if within_strict_input():
        others = {
            option: flatten(scan(info.data[option], allow_empty_classes=True)[1])
            for option in ("path", "val_path")
            if option != info.field_name and info.data.get(option) is not None
        }
        require_disjoint(flatten(found), others)


def require_disjoint(files: Iterable[Path], others: Mapping[str, Iterable[Path]]) -> None:
    """Checks that a validation or test split shares no image file with other splits.

    Files are compared by where they are (``real_paths``), so the same folder given twice,
    or under another name (a symlinked folder), is caught too. Checked when a study is
    submitted: it lists every split again.

    Args:
        files: The split's listed files.
        others: The listed files of the other given splits, by option name (``"path"``).

    Raises:
        DatasetError: ``shares 40 images with path ('pets/cat/0.png', 'pets/cat/1.png',
            ...); a split must not hold another split's images``.
    """
    own = real_paths(files)
    for option, other in others.items():
        shared = sorted(own & real_paths(other))
        if shared:
            root = data_root()
            named = ", ".join(repr(relative_name(Path(path), root)) for path in shared[:2])
            more = ", ..." if len(shared) > 2 else ""
            noun = "image" if len(shared) == 1 else "images"
            raise DatasetError(
                f"shares {len(shared)} {noun} with {option} ({named}{more}); a split must not "
                "hold another split's images"
            )


class ImageOptions(DatasetOptions):
    """Preprocessing and split options shared by the file-based sources."""

    size: Side | tuple[Side, Side] = Field(
        64, description="Output size in pixels: one number (square) or [height, width]."
    )
    fit: Literal["crop", "pad"] = Field(
        "crop",
        description="crop: scale to cover the size and cut the center; "
        "pad: scale to fit inside and pad with black.",
    )
    channels: Literal["rgb", "grayscale"] = Field("rgb", description="Color channels kept.")
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share held out for validation when no val_path is given."
    )
    test_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share held out for testing when no test_path is given."
    )
    seed: SplitSeed = Field(0, description="Seed of the stratified split.")

    @model_validator(mode="after")
    def _check_fractions(self) -> ImageOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self

    @property
    def preprocess(self) -> Preprocess:
        """The decoding settings these options ask for."""
        height, width = (self.size, self.size) if isinstance(self.size, int) else self.size
        return Preprocess(height=height, width=width, fit=self.fit, channels=self.channels)


@dataclass(frozen=True)
class FilePlan:
    """The listed files of a dataset, ready to decode; at least ``MIN_CLASSES`` classes.

    Attributes:
        source: The registered source name.
        classes: Class names; labels index this tuple.
        train: The training files (and, without explicit val/test units, the files that
            the split takes validation and test samples from).
        val: Explicit validation files, if given.
        test: Explicit test files, if given.
        sequences: Keep the frame axis: samples are ``(T, C, H, W)`` clips.

    Raises:
        DatasetError: If there are fewer than ``MIN_CLASSES`` classes.
    """

    source: str
    classes: tuple[str, ...]
    train: DecodeUnit
    val: DecodeUnit | None = None
    test: DecodeUnit | None = None
    sequences: bool = False

    def __post_init__(self) -> None:
        require_classes(self.classes, f"{self.source}: the training data")

    def units(self) -> dict[str, DecodeUnit]:
        """The given units by split name."""
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {split: unit for split, unit in named.items() if unit is not None}

    def fingerprint(
        self, options: ImageOptions, unit_fingerprints: dict[str, str] | None = None
    ) -> str:
        """The data fingerprint: every unit's files plus the split options."""
        prints = unit_fingerprints or {s: u.fingerprint() for s, u in self.units().items()}
        split = [options.val_fraction, options.test_fraction, options.seed]
        return units_fingerprint(
            [f"{name}:{value}" for name, value in sorted(prints.items())],
            self.source,
            list(self.classes),
            split,
        )


def load_plan(plan: FilePlan, options: ImageOptions) -> ImageData:
    """Decodes (or reads from the cache) every unit of ``plan`` and assembles the splits.

    Raises:
        DatasetError: If a file cannot be decoded, or a split would have no samples.
    """
    prints = {split: unit.fingerprint() for split, unit in plan.units().items()}
    decoded = {split: load_unit(unit, prints[split]) for split, unit in plan.units().items()}
    if not plan.sequences:
        decoded = {split: (x[:, 0], y) for split, (x, y) in decoded.items()}
    train_x, train_y = decoded["train"]
    test_x = test_y = None
    if "test" in decoded:
        test_x, test_y = decoded["test"]
    elif options.test_fraction > 0:
        keep, test_idx = stratified_split(train_y, options.test_fraction, options.seed)
        test_x, test_y = train_x[test_idx], train_y[test_idx]
        train_x, train_y = train_x[keep], train_y[keep]
    if "val" in decoded:
        val_x, val_y = decoded["val"]
    else:
        remaining = 1.0 - (0.0 if "test" in decoded else options.test_fraction)
        keep, val_idx = stratified_split(train_y, options.val_fraction / remaining, options.seed)
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[keep], train_y[keep]
    for split, labels in (("training", train_y), ("validation", val_y), ("test", test_y)):
        if labels is not None and len(labels) == 0:
            raise DatasetError(f"{plan.source}: the {split} split has no samples; add images")
    mean, std = channel_stats(train_x)
    return ImageData(
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        classes=plan.classes,
        mean=mean,
        std=std,
        fingerprint=plan.fingerprint(options, prints),
        test_x=test_x,
        test_y=test_y,
    )


def make_unit(
    plan_source: str,
    role: str,
    location: Path,
    root: Path,
    samples: list[tuple[Path, ...]],
    labels: list[int],
    prep: Preprocess,
) -> DecodeUnit:
    """Builds a ``DecodeUnit`` for ``samples`` found at ``location`` (a folder or a file)."""
    shown = (
        location.relative_to(root).as_posix() if location.is_relative_to(root) else location.name
    )
    return DecodeUnit(
        name=f"{plan_source} {shown or '.'} ({role})",
        identity=f"{plan_source}:{role}:{location}",
        samples=tuple(tuple(str(path) for path in sample) for sample in samples),
        labels=tuple(labels),
        prep=prep,
        root=str(root),
    )
