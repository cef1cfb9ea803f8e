"""A study's trials train, and are scored, on one dataset.

Workers on several machines each read their own copy of an image folder, and a folder can
change while a study runs; trials trained on other data would be compared (by the
sampler, the pruner and the best-trial choice) as if they were not. Each trial records
the identity of the data it trained on (``automl.data``: ``DataIdentity``); the data of
the study's lowest-numbered trial that recorded one is the study's, and a trial whose
data differs fails, saying how (``require_study_data``).

Test-split scoring and refits load the study's dataset again, maybe long after the trial
trained. Class indices follow the sorted class names, so a class renamed, added or
removed since then would give every label another meaning (a renamed class once scored
0). The trial's ``automl.classes`` attribute records its classes in index order.

Neither compares fingerprints: they include file times, which differ between copies of
the same data on different machines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from automl.data import ImageData
from automl.store import attrs


class DataChangedError(Exception):
    """The data is not what a trial trained on."""


def require_trained_data(trial: FrozenTrial, data: ImageData, source: str, doing: str) -> None:
    """Checks that ``data`` has the classes ``trial`` trained on, in the same order, and
    (where the trial recorded it) is the data it trained on (``DataIdentity``).

    A trial that recorded neither passes.

    Args:
        trial: The trained trial.
        data: The dataset as loaded now.
        source: The dataset's registered name, for the message.
        doing: What was about to happen, for the message (``"test metrics not computed"``).

    Raises:
        DataChangedError: If the classes or the data differ.
    """
    trained = trial.user_attrs.get(attrs.CLASSES)
    if trained is not None and list(trained) != list(data.classes):
        raise DataChangedError(
            f"the classes of dataset {source!r} changed since trial {trial.number} trained "
            f"({_names(trained)} then, {_names(data.classes)} now): {doing}; restore the class "
            "folders or submit a new study"
        )
    recorded = DataIdentity.from_record(trial.user_attrs.get(attrs.DATA))
    now = DataIdentity.of(data) if recorded is not None else None
    if recorded is not None and now is not None and recorded.digest != now.digest:
        raise DataChangedError(
            f"dataset {source!r} changed since trial {trial.number} trained "
            f"({recorded.describe()} then, {now.describe()} now): {doing}; restore the data "
            "or submit a new study"
        )


SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataIdentity:
    """What identifies a dataset on any machine: its classes in index order, its sample
    shape and how many images of each class each split holds (``digest``), with the
    totals for messages. File times and paths are left out (copies differ in them), and
    so are pixel values (JPEG decoders of different versions differ in a few).

    Attributes:
        digest: A hash of the classes, the sample shape and the per-class counts.
        classes: How many classes.
        images: Images per split (``train``, ``val``, ``test``).
        shape: One sample's shape, ``(C, H, W)`` (empty when recorded before it was).
    """

    digest: str
    classes: int
    images: dict[str, int]
    shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, data: ImageData) -> DataIdentity:
        """The identity of ``data`` as loaded."""
        splits = {"train": data.train_y, "val": data.val_y, "test": data.test_y}
        counts = {
            split: [] if labels is None else labels.bincount(minlength=data.num_classes).tolist()
            for split, labels in splits.items()
        }
        described = {
            "classes": list(data.classes),
            "shape": list(data.input_shape),
            "counts": counts,
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
        return cls(
            digest=digest[:32],
            classes=data.num_classes,
            images={split: sum(split_counts) for split, split_counts in counts.items()},
            shape=tuple(data.input_shape),
        )

    @classmethod
    def from_record(cls, value: Any) -> DataIdentity | None:
        """The identity a trial recorded (``record``), or None for none or another shape."""
        try:
            shape = tuple(int(size) for size in value.get("shape", ()))
            return cls(str(value["digest"]), int(value["classes"]), dict(value["images"]), shape)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def record(self) -> dict[str, Any]:
        """The trial attribute (``automl.data``)."""
        return {
            "digest": self.digest,
            "classes": self.classes,
            "images": self.images,
            "shape": list(self.shape),
        }

    def describe(self) -> str:
        """``10 classes of 1x8x8 images, 1437/360/0 train/val/test``."""
        counts = "/".join(str(self.images.get(split, 0)) for split in SPLITS)
        shape = "x".join(map(str, self.shape)) or "?"
        return f"{self.classes} classes of {shape} images, {counts} train/val/test"


def require_study_data(
    trial_number: int, trials: Sequence[FrozenTrial], mine: DataIdentity, source: str
) -> None:
    """Checks that ``mine``, the data of trial ``trial_number``, is the data the study
    trains on: the data of its lowest-numbered trial that recorded one. Two trials that
    load other data at once both pass a check at their start; the higher-numbered one
    fails the check before it reports. The message names the trial that defines the data
    and its worker.

    Raises:
        DataChangedError: If it differs.
    """
    reference = _reference(trial_number, trials)
    if reference is None:
        return
    theirs, trial = reference
    if theirs.digest == mine.digest:
        return
    worker = trial.user_attrs.get(attrs.WORKER)
    where = f" (worker {worker})" if worker else ""
    same = (
        " (the same totals, other classes or images per class)"
        if (theirs.describe() == mine.describe())
        else ""
    )
    raise DataChangedError(
        f"dataset {source!r} here is not what trial {trial.number}{where} trained on: "
        f"{mine.describe()} here, {theirs.describe()} there{same}; a study compares its "
        "trials on one dataset: give this worker the same data, or submit a new study"
    )


def _reference(
    trial_number: int, trials: Sequence[FrozenTrial]
) -> tuple[DataIdentity, FrozenTrial] | None:
    """The identity recorded by the lowest-numbered trial, if it is numbered below
    ``trial_number`` (else that trial defines the study's data)."""
    found: tuple[DataIdentity, FrozenTrial] | None = None
    for trial in trials:
        if trial.number >= trial_number or (found and found[1].number < trial.number):
            continue
        identity = DataIdentity.from_record(trial.user_attrs.get(attrs.DATA))
        if identity is not None:
            found = identity, trial
    return found


def _names(classes: list[str] | tuple[str, ...]) -> str:
    shown = ", ".join(str(name) for name in classes[:5])
    return shown + (", ..." if len(classes) > 5 else "")
