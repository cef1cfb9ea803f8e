"""Annotation assist: suggested labels for a folder of unlabeled images, least confident first.

The folder and the CSV lie under the data root (``AUTOML_DATA_ROOT``), confined as
dataset paths are (``automl.data.paths``: no ``..``, no percent escapes, no symlink out).
The CSV has ``path,label,confidence`` columns with image paths relative to the CSV, which
is what the ``image_csv`` source reads: correct the uncertain rows at the top, then train
on it (``dataset: {source: image_csv, options: {path: <the CSV>}}``).
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from automl.config import Limits
from automl.csv_cells import as_text_cell
from automl.data import DatasetError
from automl.data.paths import confine, data_root, image_files, relative_name, require_dir
from automl.delivery.inference import ImageFile, InputRejectedError, classify_files
from automl.delivery.schemas import AnnotateRequest, Annotations, Suggestion
from automl.file_clock import remove_stale_siblings
from automl.image_suffixes import SUFFIX_LIST
from automl.store import Store

T = TypeVar("T")


def annotate_folder(
    store: Store,
    study_id: int,
    request: AnnotateRequest,
    *,
    limits: Limits | None = None,
    device: str | torch.device = "cpu",
) -> Annotations:
    """Suggests a label for every image of a folder with the study's serving model.

    Every path and limit is checked, and every image's header read, before the model is
    loaded; the CSV is written last, whole or not at all.

    Args:
        store: The store holding the study and its weights.
        study_id: The study.
        request: The folder, and the CSV to write if any.
        limits: Image count and pixel limits (default: ``AUTOML_LIMIT_*``).
        device: Where the model runs.

    Returns:
        One suggestion per image, least confident first (ties by path).

    Raises:
        InputRejectedError: If a path escapes the data root or is not what it must be,
            the folder holds no images or more than ``max_annotate_images``, or any image
            has too many pixels or cannot be decoded (all such named in one error).
        StudyNotFoundError, NoBestTrialError, WeightsNotFoundError: If there is no model.
        ModelUnavailableError: If the model cannot serve.
    """
    limits = limits or Limits()
    root = data_root()
    folder = _confined(request.path, "path", root)
    _require(lambda: require_dir(folder, root), "path")
    csv_path = None if request.write_csv is None else _csv_target(request, folder, root)
    files = _require(lambda: image_files(folder, root), "path")
    shown = relative_name(folder, root)
    if not files:
        raise InputRejectedError(f"folder {shown!r} has no images ({SUFFIX_LIST})", ("path",))
    if len(files) > limits.max_annotate_images:
        raise InputRejectedError(
            f"folder {shown!r} has {len(files)} images; max_annotate_images allows "
            f"{limits.max_annotate_images} (AUTOML_LIMIT_MAX_ANNOTATE_IMAGES)",
            ("path",),
        )
    images = [ImageFile(file, relative_name(file, root), ("path",)) for file in files]
    model, tops = classify_files(
        store, study_id, images, ("path",), top=request.top, limits=limits, device=device
    )
    suggestions = [
        Suggestion(
            path=image.name, label=scores[0].label, confidence=scores[0].probability, top=scores
        )
        for image, scores in zip(images, tops, strict=True)
    ]
    suggestions.sort(key=lambda suggestion: (suggestion.confidence, suggestion.path))
    if csv_path is not None:
        # Checked again: classifying can take minutes, in which a folder on the CSV's way
        # may have become a link out of the data root, or the file may have appeared.
        csv_path = _csv_target(request, folder, root)
        _write_csv(csv_path, [root / s.path for s in suggestions], suggestions)
    return Annotations(
        model=model,
        folder=shown,
        count=len(suggestions),
        csv=None if csv_path is None else relative_name(csv_path, root),
        suggestions=suggestions,
    )


def _confined(value: str, field: str, root: Path) -> Path:
    return _require(lambda: confine(value, root), field)


def _require(check: Callable[[], T], field: str) -> T:
    """Runs a data-root check, turning its ``DatasetError`` into a refusal of ``field``."""
    try:
        return check()
    except DatasetError as exc:
        raise InputRejectedError(str(exc), (field,)) from None


def _csv_target(request: AnnotateRequest, folder: Path, root: Path) -> Path:
    """The CSV to write, checked: under the root, a ``.csv`` file in an existing folder
    at or above the annotated folder, and new unless ``overwrite``."""
    assert request.write_csv is not None
    path = _confined(request.write_csv, "write_csv", root)
    shown = relative_name(path, root)

    def refuse(message: str) -> InputRejectedError:
        return InputRejectedError(message, ("write_csv",))

    if path.suffix.lower() != ".csv":
        raise refuse(f"{request.write_csv!r} must name a .csv file")
    if not path.parent.is_dir():
        raise refuse(f"folder {relative_name(path.parent, root)!r} not found under the data root")
    if not folder.is_relative_to(path.parent):
        raise refuse(
            f"{shown!r} must lie in the annotated folder or a folder above it: image_csv "
            "reads image paths relative to the CSV, and never through '..'"
        )
    if path.is_dir():
        raise refuse(f"{shown!r} is a folder")
    if path.exists() and not request.overwrite:
        raise refuse(f"{shown!r} exists; set overwrite (--overwrite) to replace it")
    return path


def _write_csv(path: Path, files: list[Path], suggestions: list[Suggestion]) -> None:
    """Writes ``path,label,confidence`` rows (paths relative to the CSV), atomically: one
    per image, however many links in the folder name it.

    The file gets the mode of the file it replaces, else the umask's (as any new file):
    workers running as another user read it next.
    """
    remove_stale_siblings(path, ".", ".tmp")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(descriptor, stat.S_IMODE(path.stat().st_mode))
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "confidence"])
            listed: set[Path] = set()
            for file, suggestion in zip(files, suggestions, strict=True):
                # A link to an image also listed: one row, as image_csv refuses a second.
                if file.resolve() in listed:
                    continue
                listed.add(file.resolve())
                relative = file.relative_to(path.parent).as_posix()
                label, confidence = suggestion.label, f"{suggestion.confidence:.6f}"
                writer.writerow([as_text_cell(relative), as_text_cell(label), confidence])
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise InputRejectedError(
            f"cannot write {path.name!r}: {exc.strerror or exc}", ("write_csv",)
        ) from None
