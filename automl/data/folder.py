"""``image_folder``: a user's own images, one subfolder per class."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from automl.data.base import ImageData, register_dataset
from automl.data.cache import DecodeUnit
from automl.data.errors import DatasetError
from automl.data.files import (
    SPLIT_FRACTION_RULES,
    FilePlan,
    ImageOptions,
    check_drawn_splits,
    check_split_folder,
    load_plan,
    make_unit,
    require_classes,
    require_distinct_classes,
    require_each_image_once,
)
from automl.data.paths import (
    confine,
    data_root,
    image_files,
    relative_name,
    require_dir,
    subfolders,
    unread_entries,
)
from automl.image_suffixes import IMAGE_SUFFIXES, SUFFIX_LIST
from automl.registry import within_strict_input
from automl.wording import counted, first_few


class ImageFolderOptions(ImageOptions):
    """Options of ``image_folder``. Paths are relative to the data root (``AUTOML_DATA_ROOT``)."""

    APPLIES_WHEN = SPLIT_FRACTION_RULES

    path: str = Field(description="Folder with one subfolder of images per class.")
    val_path: str | None = Field(None, description="Validation folder (same layout), optional.")
    test_path: str | None = Field(None, description="Test folder (same layout), optional.")

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        classes, files = scan_class_folder(value)
        require_classes(classes, f"folder {value!r}")
        if within_strict_input():  # at submit, as the other splits' files are checked
            require_distinct_classes(classes, f"folder {value!r}", "class folders")
            require_each_image_once(_flat(files))
        return value

    @field_validator("val_path", "test_path")
    @classmethod
    def _check_split_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        check_split_folder(value, info, scan_class_folder, _flat)
        return value

    def _file_plan(self) -> FilePlan:
        """Lists the files of every given split."""
        return plan_image_folder(self)

    @model_validator(mode="after")
    def _check_drawn_splits(self) -> ImageFolderOptions:
        check_drawn_splits(self, self.val_path, self.test_path, self._class_sizes, "image")
        return self

    def _class_sizes(self) -> tuple[list[str], list[int]]:
        classes, files = scan_class_folder(self.path)
        return classes, [len(found) for found in files]


def _flat(files: list[list[Path]]) -> list[Path]:
    """The image files of every class, in one list."""
    return [path for found in files for path in found]


def scan_class_folder(
    value: str, allow_empty_classes: bool = False
) -> tuple[list[str], list[list[Path]]]:
    """Lists the classes (subfolder names) and image files of a class folder.

    A listing is remembered for up to a minute while the folder and its class folders keep
    their identity and times (a file added, removed or renamed changes its folder's), so
    validating options, fingerprinting and loading one trial's data do not list thousands
    of files again; files changed in place are caught by the fingerprint, which stats
    every file.

    Args:
        value: The folder, as the user wrote it (confined to the data root).
        allow_empty_classes: Accept class folders without images (validation and test
            folders need not hold every class).

    Returns:
        ``(classes, files)``: sorted class names and, per class, its sorted image files.

    Raises:
        DatasetError: If the path escapes the data root, is missing, has no class
            folders, or a class has no images.
    """
    root = data_root()
    folder = confine(value, root)
    require_dir(folder, root)
    remembered = _listings.get(folder, root)
    if remembered is not None:
        classes, files = remembered
    else:
        started = time.monotonic(), time.time()
        classes = subfolders(folder, root)
        files = [image_files(class_dir, root) for class_dir in classes]
        _listings.put(folder, root, classes, files, started)
    if not classes:
        raise DatasetError(
            f"folder {relative_name(folder, root)!r} has no class folders: put each class's "
            "images in a subfolder named after the class"
        )
    if not allow_empty_classes:
        for class_dir, found in zip(classes, files, strict=True):
            if not found:
                shown = relative_name(folder, root)
                raise DatasetError(
                    f"class {class_dir.name!r} has no images ({SUFFIX_LIST}) in {shown!r}"
                    + _split_folders_hint(shown, [path.name for path in classes])
                )
    if not any(files):
        raise DatasetError(f"folder {relative_name(folder, root)!r} has no images ({SUFFIX_LIST})")
    return [class_dir.name for class_dir in classes], [list(found) for found in files]


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test"})


def _split_folders_hint(shown: str, names: list[str]) -> str:
    """Where every "class" is named as a split, says the folder above the splits was given:
    each split is a folder of its own (``path``, ``val_path``, ``test_path``)."""
    if len(names) < 2 or not {name.lower() for name in names} <= SPLIT_FOLDER_NAMES:
        return ""
    train = next((name for name in names if name.lower().startswith("train")), "train")
    return (
        f"; {', '.join(names)} look like splits, each holding class folders: set path: "
        f"{shown}/{train} and give the others as val_path and test_path"
    )


def unread_note(value: str) -> str | None:
    """What ``list_class_folders`` leaves out of the folder ``value`` (the images of folders
    inside class folders, files beside the class folders, files of other types), for
    ``automl validate --data``: torchvision's ``ImageFolder`` reads nested folders, and
    users coming from it lost images without a word. None if nothing is left out.

    Raises:
        DatasetError: If a folder cannot be listed.
    """
    root = data_root()
    folder = confine(value, root)
    _, loose = unread_entries(folder, root, images=True)
    nested: list[str] = []
    no_files: list[str] = []
    other_types: Counter[str] = Counter()
    for class_dir in subfolders(folder, root):
        folders, files = unread_entries(class_dir, root)
        nested += [f"{class_dir.name}/{name}" for name in folders]
        for name in files:
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                no_files.append(f"{class_dir.name}/{name}")
            else:
                other_types[suffix or "no suffix"] += 1
    parts = []
    if nested:
        parts.append(
            f"{counted(len(nested), 'folder')} inside class folders ({first_few(nested)}): "
            "images must sit directly in their class folder"
        )
    if loose:
        parts.append(f"{counted(len(loose), 'file')} beside the class folders ({first_few(loose)})")
    if no_files:
        parts.append(
            f"{counted(len(no_files), 'image name')} that no file holds ({first_few(no_files)}): "
            "links to nothing"
        )
    if other_types:
        kinds = ", ".join(f"{suffix}: {n}" for suffix, n in sorted(other_types.items()))
        parts.append(
            f"{counted(other_types.total(), 'file')} of other types in class folders ({kinds}; "
            f"images are {SUFFIX_LIST})"
        )
    return "; ".join(parts) or None


class _ListingMemo:
    """The last few class-folder listings of this process, each with the folders' stamps
    (inode, modification and change time) it was taken at.

    A listing is reused only if every folder's stamp is unchanged, it is at most
    ``MAX_AGE_S`` old, and each folder's times were already at least ``SETTLE_S`` old when
    the listing started: on file systems with coarse timestamps, a change right after a
    listing could otherwise keep the same time. The change time cannot be set back by
    tools that restore modification times (``rsync -a``, ``tar``); the age limit bounds
    what a file system that keeps no folder times (some network mounts) can hide. (On a
    network mount the folders' times are the file server's, compared with this machine's
    clock: a machine more than ``SETTLE_S`` ahead takes any listing as settled, and the
    age limit bounds what that can hide too. Data folders are often read-only, so the
    server's clock is not probed here.)
    """

    SIZE = 16
    SETTLE_S = 2.0
    MAX_AGE_S = 60.0

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Path, Path], _Listing] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Path, root: Path) -> tuple[list[Path], list[list[Path]]] | None:
        """The remembered listing of ``folder``, if no folder of it changed since."""
        key = (folder, root)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        taken, stamp, classes, files = entry
        try:
            fresh = (
                time.monotonic() - taken <= self.MAX_AGE_S and _stamp([folder, *classes]) == stamp
            )
        except OSError:  # a class folder went away
            fresh = False
        with self._lock:
            if not fresh:
                self._entries.pop(key, None)
                return None
            if key in self._entries:
                self._entries.move_to_end(key)
        return classes, files

    def put(
        self,
        folder: Path,
        root: Path,
        classes: list[Path],
        files: list[list[Path]],
        started: tuple[float, float],
    ) -> None:
        """Remembers a listing taken at ``started`` (``time.monotonic()``, ``time.time()``)
        if it is settled. (Its age is kept on the monotonic clock: a clock set back would
        keep it fresh for longer.)"""
        try:
            stamp = _stamp([folder, *classes])
        except OSError:
            return
        taken, wall = started
        if any(max(times[1:]) / 1e9 > wall - self.SETTLE_S for _, times in stamp):
            return
        with self._lock:
            self._entries[(folder, root)] = (taken, stamp, classes, files)
            self._entries.move_to_end((folder, root))
            while len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)


_Stamp = tuple[tuple[str, tuple[int, int, int]], ...]
_Listing = tuple[float, _Stamp, list[Path], list[list[Path]]]
"""When the listing started, the folders' stamps, the class folders and their files."""


def _stamp(folders: list[Path]) -> _Stamp:
    """Each folder's inode, modification and change time (nanoseconds)."""
    stamps = []
    for folder in folders:
        info = os.stat(folder)
        stamps.append((str(folder), (info.st_ino, info.st_mtime_ns, info.st_ctime_ns)))
    return tuple(stamps)


_listings = _ListingMemo()


def plan_image_folder(options: ImageFolderOptions) -> FilePlan:
    """Lists the files of every given folder."""
    root = data_root()
    classes, train_files = scan_class_folder(options.path)
    index = {name: i for i, name in enumerate(classes)}

    def folder_unit(value: str, role: str, names: list[str], files: list[list[Path]]) -> DecodeUnit:
        samples = [(path,) for found in files for path in found]
        labels = [index[name] for name, found in zip(names, files, strict=True) for _ in found]
        return make_unit(
            "image_folder", role, confine(value, root), root, samples, labels, options.preprocess
        )

    train = folder_unit(options.path, "train", classes, train_files)
    extra = {}
    for role, value in (("val", options.val_path), ("test", options.test_path)):
        if value is not None:
            names, files = scan_class_folder(value, allow_empty_classes=True)
            extra[role] = folder_unit(value, role, names, files)
    return FilePlan("image_folder", tuple(classes), train, **extra)


def fingerprint_image_folder(options: ImageFolderOptions) -> str:
    """Changes when a file is added, removed or modified, or an option changes."""
    return plan_image_folder(options).fingerprint(options)


@register_dataset(
    "image_folder",
    ImageFolderOptions,
    fingerprint=fingerprint_image_folder,
    description="your images: one subfolder per class (png, jpg, webp, bmp)",
)
def load_image_folder(options: ImageFolderOptions) -> ImageData:
    """Loads an image folder, decoding through the shared disk cache."""
    return load_plan(plan_image_folder(options), options)
