"""What the file-based sources share: image options, and turning labelled files into data.

A file source (``image_folder``, ``image_csv``, ``frame_sequences``) lists its files into
a ``FilePlan``: the class names and one ``DecodeUnit`` per given split. ``load_plan``
decodes each unit through the disk cache, splits off validation (and test) data when no
explicit folder was given, and computes the normalization statistics on the training split.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, ValidationInfo, model_validator

from automl.config import Limits
from automl.data.base import DatasetOptions, ImageData, channel_stats
from automl.data.cache import DecodeUnit, load_unit, units_fingerprint
from automl.data.decode import Preprocess
from automl.data.errors import DatasetError
from automl.data.paths import data_root, file_identities, file_identity, relative_name
from automl.data.splits import SplitSeed, stratified_split
from automl.registry import AppliesWhen, within_strict_input

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


def require_distinct_classes(classes: Sequence[str], what: str, kind: str) -> None:
    """Checks that no two class names differ only in how their accents are encoded or in
    spaces at their ends: they would be two classes that every report prints alike.

    Args:
        classes: The class names, as found.
        what: What holds them (``"folder 'pets'"``).
        kind: What a name is there (``"class folders"``, ``"labels"``).

    Raises:
        DatasetError: Naming both, with their characters written out.
    """
    seen: dict[str, str] = {}
    for name in classes:
        other = seen.setdefault(_nfc(name).strip(), name)
        if other == name:
            continue
        if _nfc(other) == _nfc(name):
            how = (
                "only in how their accents are encoded (Unicode NFC and NFD, as copies "
                "between macOS and other systems may write file names)"
            )
        elif other.strip() == name.strip():
            how = "only in spaces at their ends"
        else:
            how = "only in spaces at their ends and in how their accents are encoded"
        raise DatasetError(
            f"{what}: {kind} {other!a} and {name!a} differ {how}, so they would be two "
            "classes that read alike; rename one of the two"
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
            raise DatasetError(_unknown_class(unknown[0], train_classes))
    if within_strict_input():
        others = {
            option: flatten(scan(info.data[option], allow_empty_classes=True)[1])
            for option in ("path", "val_path")
            if option != info.field_name and info.data.get(option) is not None
        }
        require_disjoint(flatten(found), others)


def _unknown_class(name: str, train_classes: list[str]) -> str:
    """Why a split's class folder is refused; where it looks like one of ``path``'s but
    encodes its accents otherwise (a copy from macOS writes names decomposed, NFD), so."""
    same = [c for c in train_classes if _nfc(c) == _nfc(name)]
    if same:
        return (
            f"class folder {name!r} differs from path's class {same[0]!r} only in how its "
            f"accents are encoded ({name!a} against {same[0]!a}: Unicode NFD and "
            "NFC, as copies between macOS and other systems may write file names); rename "
            "one of the two folders"
        )
    return f"class folder {name!r} is not a class of path; valid classes: " + ", ".join(
        train_classes
    )


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def require_disjoint(files: Iterable[Path], others: Mapping[str, Iterable[Path]]) -> None:
    """Checks that a validation or test split shares no image file with other splits.

    Files are compared by identity (``file_identities``: device and inode), so the same
    folder given twice or under another name (a symlinked folder), and files that are
    symlinks or hard links to another split's images, are caught too. Checked when a study
    is submitted: it lists every split again.

    Args:
        files: The split's listed files.
        others: The listed files of the other given splits, by option name (``"path"``).

    Raises:
        DatasetError: ``shares 40 images with path ('pets/cat/0.png', 'pets/cat/1.png',
            ...); a split must not hold another split's images``.
    """
    own = file_identities(files)
    for option, other in others.items():
        theirs = set(file_identities(other).values())
        shared = sorted(path for path, identity in own.items() if identity in theirs)
        if shared:
            root = data_root()
            named = ", ".join(repr(relative_name(Path(path), root)) for path in shared[:2])
            more = ", ..." if len(shared) > 2 else ""
            noun = "image" if len(shared) == 1 else "images"
            raise DatasetError(
                f"shares {len(shared)} {noun} with {option} ({named}{more}); a split must not "
                "hold another split's images"
            )


def require_each_image_once(files: Iterable[Path]) -> None:
    """Checks that a folder lists each image file once: no file under two names (a
    symlinked class folder, or a file symlink or hard link to another listed image).

    Otherwise one image could be two classes' at once, or land in training and validation
    both. Files are compared by identity (``file_identities``), when a study is submitted.

    Raises:
        DatasetError: ``image 'pets/kitten/1.png' is 'pets/cat/1.png' again (a link; 40
            images in all): each image must be listed once``.
    """
    first: dict[tuple[int, int], Path] = {}
    again: list[tuple[Path, Path]] = []
    for path in files:
        identity = file_identity(path)
        if identity in first:
            again.append((path, first[identity]))
        else:
            first[identity] = path
    if again:
        root = data_root()
        path, earlier = (repr(relative_name(name, root)) for name in again[0])
        more = f"; {len(again)} images in all" if len(again) > 1 else ""
        raise DatasetError(
            f"image {path} is {earlier} again (a link{more}): each image must be listed once"
        )


SPLIT_FRACTION_RULES: Mapping[str, AppliesWhen] = {
    "val_fraction": AppliesWhen("val_path", (None,)),
    "test_fraction": AppliesWhen("test_path", (None,)),
}
"""A fraction draws its split from the training data only where no file or folder gives
that split (``APPLIES_WHEN`` of the sources with ``val_path`` and ``test_path``)."""


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

    @classmethod
    def channels_of(cls, options: Mapping[str, Any]) -> int | None:
        """1 for ``channels: grayscale``, 3 for RGB (the default)."""
        channels = options.get("channels", cls.model_fields["channels"].default)
        return {"grayscale": 1, "rgb": 3}.get(channels)

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

    @model_validator(mode="after")
    def _check_decoded_size(self) -> ImageOptions:
        plan = self._file_plan() if within_strict_input() else None
        if plan is not None:  # at submit; a worker checks again before decoding
            check_decoded_size(plan)
        return self

    def _file_plan(self) -> FilePlan | None:
        """Lists the files these options name (each file source has its own listing; a
        plugin's that has none is not checked at submit)."""
        return None


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


def check_decoded_size(plan: FilePlan) -> None:
    """Refuses a dataset that decodes to more than ``AUTOML_LIMIT_MAX_DATASET_BYTES``:
    workers hold every split in memory (a tester's 2048x2048 digits, 22.6 GB, were
    accepted and took the worker down).

    Raises:
        DatasetError: Naming the size, the limit and the remedies.
    """
    limit = Limits().max_dataset_bytes
    units = plan.units().values()
    samples = sum(len(unit.samples) for unit in units)
    size = sum(len(sample) * unit.prep.sample_bytes for unit in units for sample in unit.samples)
    if size > limit:
        prep = plan.train.prep
        raise DatasetError(
            f"{samples} {'clips' if plan.sequences else 'images'} at {prep.height}x"
            f"{prep.width} ({prep.channels}) decode to {size:,} bytes; "
            f"max_dataset_bytes allows {limit:,} "
            "(AUTOML_LIMIT_MAX_DATASET_BYTES): use a smaller size, grayscale or fewer files"
        )


def load_plan(plan: FilePlan, options: ImageOptions) -> ImageData:
    """Decodes (or reads from the cache) every unit of ``plan`` and assembles the splits.

    Raises:
        DatasetError: If a file cannot be decoded, a split would have no samples, or the
            data decodes to more than ``AUTOML_LIMIT_MAX_DATASET_BYTES``.
    """
    check_decoded_size(plan)
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
            raise DatasetError(f"{plan.source}: {_empty_split(plan, options, split)}")
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


def _empty_split(plan: FilePlan, options: ImageOptions, split: str) -> str:
    """Why a split of ``plan`` came out empty, and what to do (``load_plan``)."""
    noun = "clip" if plan.sequences else "image"
    if split == "training" or {"validation": plan.val, "test": plan.test}[split] is not None:
        return f"the {split} split has no samples; add {noun}s"
    counts = torch.bincount(torch.tensor(plan.train.labels), minlength=len(plan.classes))
    test_fraction = options.test_fraction if split == "validation" and plan.test is None else 0
    return empty_split_message(split, plan.classes, counts.tolist(), noun, test_fraction)


def empty_split_message(
    split: str, classes: Sequence[str], counts: Sequence[int], noun: str, test_fraction: float
) -> str:
    """Why a split drawn from the training data has no samples, and what to do.

    A split takes samples only from classes with at least two (a class's only sample stays
    in training), and the test split is drawn before the validation split.

    Args:
        split: ``"validation"`` or ``"test"``.
        classes: The class names.
        counts: Samples per class before any split was drawn.
        noun: What a sample is (``"image"``, ``"clip"``).
        test_fraction: The share of the test split drawn from the same data before this
            one; 0 if none was.

    Returns:
        ``the validation split has no samples: every class has 2 images, and the test
        split (test_fraction 0.2) took its share of each class first, ...; add images, give
        val_path or test_path, or set test_fraction to 0``.
    """
    sizes = _smallest_classes(classes, counts, noun)
    if split == "validation" and test_fraction > 0 and max(counts) > 1:
        lower = "set test_fraction to 0" if max(counts) <= 2 else "lower test_fraction"
        return (
            f"the validation split has no samples: {sizes}, and the test split (test_fraction "
            f"{test_fraction:g}) took its share of each class first, leaving none the 2 {noun}s "
            f"a class needs to give one to validation; add {noun}s, give val_path or test_path, "
            f"or {lower}"
        )
    if split == "validation":
        target, remedy = "validation", f"add {noun}s or give val_path"
    else:
        target, remedy = "the test split", f"add {noun}s, give test_path, or set test_fraction to 0"
    return (
        f"the {split} split has no samples: {sizes}, and a class needs 2 {noun}s to give one "
        f"to {target}; {remedy}"
    )


def _smallest_classes(classes: Sequence[str], counts: Sequence[int], noun: str) -> str:
    """``every class has 2 images``, or ``the smallest classes have 1 image (3 classes:
    'a', 'b', ...)``."""
    smallest = min(counts)
    many = f"{smallest} {noun}" + ("" if smallest == 1 else "s")
    names = [name for name, count in zip(classes, counts, strict=True) if count == smallest]
    if len(names) == len(classes):
        return f"every class has {many}"
    if len(names) == 1:
        return f"the smallest class has {many} ({names[0]!r})"
    shown = ", ".join(repr(name) for name in names[:2]) + (", ..." if len(names) > 2 else "")
    return f"the smallest classes have {many} ({len(names)} classes: {shown})"


def check_drawn_splits(
    options: ImageOptions,
    val_path: str | None,
    test_path: str | None,
    counts: Callable[[], tuple[list[str], list[int]]],
    noun: str,
) -> None:
    """At submit, refuses split options under which the test split certainly leaves the
    validation split empty: no class has more than 2 samples (each gives one to the test
    split, and its last stays in training).

    Data whose classes all hold one sample is still accepted here: it fails when a trial
    loads it, with the same explanation (``load_plan``).

    Args:
        options: The options validated so far.
        val_path: The validation folder or file, if given (nothing is then drawn).
        test_path: The test folder or file, if given.
        counts: Lists ``path``: its class names and samples per class (called only if
            both splits are drawn).
        noun: What a sample is (``"image"``, ``"clip"``).

    Raises:
        DatasetError: With ``empty_split_message``'s message.
    """
    if not within_strict_input() or val_path is not None:
        return
    if test_path is not None or options.test_fraction == 0:
        return
    classes, sizes = counts()
    if max(sizes) == 2:
        raise DatasetError(
            empty_split_message("validation", classes, sizes, noun, options.test_fraction)
        )


def make_unit(
    plan_source: str,
    role: str,
    location: Path,
    root: Path,
    samples: list[tuple[Path, ...]],
    labels: list[int],
    prep: Preprocess,
    selection: str = "",
) -> DecodeUnit:
    """Builds a ``DecodeUnit`` for ``samples`` found at ``location`` (a folder or a file).

    ``selection`` names the options besides ``prep`` that pick the samples' files
    (``DecodeUnit.selection``).
    """
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
        selection=selection,
    )
