"""Dataset paths confined to the data root (``AUTOML_DATA_ROOT``) and image-file discovery.

Every path a dataset option names is checked here before anything is read: no NUL
bytes, no percent-encoded characters, no ``..`` component, and after resolving symlinks
it must lie inside the data root. Nothing is ever created by these checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from automl.config import current_settings
from automl.data.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""File name endings read as images (case-insensitive); other files are ignored."""

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# What the file systems take (NAME_MAX, PATH_MAX on Linux): longer paths fail every call
# with ENAMETOOLONG, so they are refused up front with a message instead.
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 4095
_NATURAL_PART = re.compile(r"(\d+)")


def data_root() -> Path:
    """The resolved data root, from ``AUTOML_DATA_ROOT`` (default ``./data``)."""
    return current_settings().data_root.resolve()


def confine(value: str | os.PathLike[str], root: Path | None = None) -> Path:
    """Resolves a user-given path inside the data root, or refuses it.

    Relative paths are relative to the root; absolute paths must point inside it.

    Args:
        value: The path as the user wrote it.
        root: The resolved data root (default: ``data_root()``).

    Returns:
        The resolved absolute path (it may not exist).

    Raises:
        DatasetError: If the path is empty, too long, not valid Unicode, contains a NUL
            byte, a percent-encoded character or a ``..`` component, or resolves (symlinks
            followed) outside the root.
    """
    text = os.fspath(value)
    if "\x00" in text:
        raise DatasetError("must not contain NUL bytes")
    if not text.strip():
        raise DatasetError("must not be empty")
    try:
        encoded = text.encode()
    except UnicodeEncodeError:
        raise DatasetError("is not valid Unicode text (a lone surrogate)") from None
    if len(encoded) > _MAX_PATH_BYTES:
        raise DatasetError(f"is longer than {_MAX_PATH_BYTES} bytes")
    if _PERCENT_ESCAPE.search(text):
        raise DatasetError(f"{text!r} contains percent-encoded characters; write the path as is")
    path = Path(text)
    if ".." in path.parts:
        raise DatasetError(f"{text!r} must not contain '..'")
    if any(len(part.encode()) > _MAX_NAME_BYTES for part in path.parts):
        raise DatasetError(f"has a file or folder name longer than {_MAX_NAME_BYTES} bytes")
    root = data_root() if root is None else root
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise DatasetError(f"{text!r} is outside the data root (AUTOML_DATA_ROOT)")
    return resolved


def relative_name(path: Path, root: Path | None = None) -> str:
    """``path`` relative to the data root, for messages that should not show server paths."""
    root = data_root() if root is None else root
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return path.name


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part for part in _NATURAL_PART.split(name))


def require_dir(path: Path, root: Path) -> None:
    """Raises ``DatasetError`` unless ``path`` is an existing folder."""
    if not path.exists():
        raise DatasetError(f"folder {relative_name(path, root)!r} not found under the data root")
    if not path.is_dir():
        raise DatasetError(f"{relative_name(path, root)!r} is not a folder")


def subfolders(folder: Path, root: Path) -> list[Path]:
    """The visible subfolders of ``folder``, name-sorted; each must stay inside ``root``.

    Raises:
        DatasetError: If a subfolder is a symlink that points outside the root.
    """
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                _check_link(path, root)
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def image_files(folder: Path, root: Path, natural: bool = False) -> list[Path]:
    """The visible image files directly in ``folder``, sorted by name.

    Args:
        folder: The folder to list.
        root: The resolved data root; symlinked files must resolve inside it.
        natural: Sort numbers by value (``2`` before ``10``), as frames of a clip are.

    Raises:
        DatasetError: If a file is a symlink that points outside the root.
    """
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or _suffix(entry.name) not in IMAGE_SUFFIXES:
                continue
            if not entry.is_file():
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                _check_link(path, root)
            found.append(path)
    return sorted(found, key=lambda p: natural_key(p.name) if natural else p.name)


def _suffix(name: str) -> str:
    """``Path(name).suffix.lower()`` without building a path (listings hold many files)."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _check_link(path: Path, root: Path) -> None:
    if not path.resolve().is_relative_to(root):
        raise DatasetError(
            f"{relative_name(path, root)!r} is a symlink outside the data root (AUTOML_DATA_ROOT)"
        )
