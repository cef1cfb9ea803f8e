"""Dataset paths confined to the data root (``AUTOML_DATA_ROOT``) and image-file discovery.

Every path a dataset option names is checked here before anything is read: no NUL
bytes, no percent-encoded characters, no ``..`` component, and after resolving symlinks
it must lie inside the data root. Nothing is ever created by these checks.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from automl.config import current_settings
from automl.data.errors import DatasetError
from automl.image_suffixes import IMAGE_SUFFIXES

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
"""Pillow formats an image file may hold, whatever its suffix: those of ``IMAGE_SUFFIXES``.
Training and prediction (``automl.delivery``) both open images with these only."""
FORMAT_LIST = "png, jpeg, webp or bmp"
"""``IMAGE_FORMATS`` for messages."""

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# What the file systems take (NAME_MAX, PATH_MAX on Linux): longer paths fail every call
# with ENAMETOOLONG, so they are refused up front with a message instead.
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 4095
_NATURAL_PART = re.compile(r"(\d+)")


def data_root() -> Path:
    """The resolved data root, from ``AUTOML_DATA_ROOT`` (default ``./data``)."""
    return current_settings().data_root.resolve()


OwnFolders = tuple[tuple[str, Path], ...]
"""automl's folders that lie under the data root, each with the variable that sets it."""


def confine(
    value: str | os.PathLike[str], root: Path | None = None, own: OwnFolders | None = None
) -> Path:
    """Resolves a user-given path inside the data root, or refuses it.

    Relative paths are relative to the root; absolute paths must point inside it.

    Args:
        value: The path as the user wrote it.
        root: The resolved data root (default: ``data_root()``).
        own: ``own_folders_under(root)``, where a caller confines many paths (a CSV's
            rows): read from the settings on each call otherwise.

    Returns:
        The resolved absolute path (it may not exist).

    Raises:
        DatasetError: If the path is empty, too long, not valid Unicode, contains a NUL
            byte, a percent-encoded character or a ``..`` component, is a symlink loop, or
            resolves (symlinks followed) outside the root or to a name that is not UTF-8.
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
    resolved = resolve(path if path.is_absolute() else root / path, repr(text))
    if not resolved.is_relative_to(root):
        raise DatasetError(f"{text!r} is outside the data root (AUTOML_DATA_ROOT)")
    for variable, folder in own_folders_under(root) if own is None else own:
        if resolved.is_relative_to(folder):
            raise DatasetError(
                f"{text!r} is in automl's own folder ({variable}), which holds every "
                "project's files: no spec reads from it"
            )
    inside = relative_name(resolved, root)
    if not _is_utf8(inside):
        raise DatasetError(f"{text!r} leads to {printable(inside)}, a name that is not valid UTF-8")
    return resolved


def own_folders_under(root: Path) -> OwnFolders:
    """automl's folders of weights and checkpoints, and of decoded images, where they lie
    under the data root (a data root of ``.`` beside them): each with the variable that
    sets it."""
    settings = current_settings()
    folders = (
        ("AUTOML_ARTIFACTS_DIR", settings.artifacts_dir),
        ("AUTOML_CACHE_DIR", settings.cache_dir),
    )
    return _folders_under(root, Path.cwd(), folders)


@functools.lru_cache(maxsize=16)
def _folders_under(root: Path, cwd: Path, folders: OwnFolders) -> OwnFolders:
    """Those of ``folders`` (relative ones to ``cwd``) that resolve under ``root``; cached,
    as ``confine`` runs for every row of a CSV."""
    inside = []
    for variable, folder in folders:
        try:
            resolved = (cwd / folder).resolve()
        except (OSError, RuntimeError):  # a loop or an unreadable folder: nothing there
            continue
        if resolved.is_relative_to(root):
            inside.append((variable, resolved))
    return tuple(inside)


def resolve(path: Path, shown: str) -> Path:
    """``path.resolve()``, with symlink loops and unreadable folders as ``DatasetError``.

    Args:
        path: The path to resolve (it may not exist).
        shown: How messages name it, quoted.

    Raises:
        DatasetError: If a symlink on the way loops or a folder cannot be searched.
    """
    try:
        return path.resolve()
    except RuntimeError:  # Python 3.11 turns ELOOP into this; later versions raise OSError
        raise DatasetError(f"{shown} is a symlink loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DatasetError(f"{shown} is a symlink loop") from None
        raise DatasetError(f"cannot resolve {shown}: {exc.strerror}") from None


def printable(name: str) -> str:
    """A file name quoted for messages, bytes that are not UTF-8 shown as ``\\xe9``."""
    return "'" + os.fsencode(name).decode("utf-8", "backslashreplace") + "'"


def _is_utf8(name: str) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def relative_name(path: Path, root: Path | None = None) -> str:
    """``path`` relative to the data root, for messages that should not show server paths."""
    root = data_root() if root is None else root
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return path.name


def not_found(kind: str, path: Path, root: Path) -> str:
    """Says that ``path`` (a ``kind``: folder, CSV file...) is not under the data root,
    with what most likely went wrong: no data root at all, the root's own name written
    in front (``data/mine`` for ``mine``), or another case of a name that is there.
    Server paths stay out of it: an API caller sees it too."""
    shown = relative_name(path, root)
    where = "under the data root (AUTOML_DATA_ROOT; a spec's paths are relative to it)"
    try:
        if not root.is_dir():
            return f"{kind} {shown!r} not found: the data root (AUTOML_DATA_ROOT) does not exist"
        guess = _likely_meant(path, root)
    except OSError:
        guess = None
    hint = f"; did you mean {guess!r}?" if guess else ""
    return f"{kind} {shown!r} not found {where}{hint}"


def _likely_meant(path: Path, root: Path) -> str | None:
    """A path under the root that exists and the user probably meant, or None: the same
    names in another case, after the root's own name written in front (``data/mine``)."""
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
    tries = [parts]
    if len(parts) > 1 and parts[0].casefold() == root.name.casefold():
        tries.insert(0, parts[1:])
    for names in tries:
        found = _case_insensitive(root, names)
        # Never through a symlink out of the root: that would tell what lies outside it.
        if found is not None and found != path and found.resolve().is_relative_to(root):
            return relative_name(found, root)
    return None


MAX_LOOKED_AT = 1000
"""Entries of a folder a suggestion compares at most (a folder of images has many)."""


def _case_insensitive(root: Path, names: tuple[str, ...]) -> Path | None:
    """The existing path under ``root`` whose parts are ``names`` in any case, or None."""
    here = root
    for name in names:
        exact = here / name
        if exact.exists():
            here = exact
            continue
        wanted = name.casefold()
        with os.scandir(here) as entries:
            matches = [
                Path(entry.path)
                for entry in itertools.islice(entries, MAX_LOOKED_AT)
                if entry.name.casefold() == wanted
            ]
        if not matches:
            return None
        here = min(matches)
    return here


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part for part in _NATURAL_PART.split(name))


def require_dir(path: Path, root: Path) -> None:
    """Raises ``DatasetError`` unless ``path`` is an existing folder."""
    shown = relative_name(path, root)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:
        raise DatasetError(f"cannot read folder {shown!r}: {exc.strerror}") from None
    if not exists:
        raise DatasetError(not_found("folder", path, root))
    if not is_dir:
        raise DatasetError(f"{shown!r} is not a folder")


def subfolders(folder: Path, root: Path) -> list[Path]:
    """The visible subfolders of ``folder``, name-sorted; each must stay inside ``root``.

    Symlinks that lead nowhere (missing target, a loop) are skipped like other files, and
    so are automl's own folders (``own_folders``).

    Raises:
        DatasetError: If ``folder`` cannot be listed, or a subfolder cannot be read, has a
            name that is not UTF-8, or is a symlink that points outside the root.
    """
    own = {path.name for path in own_folders() if path.parent == folder}
    found = []
    for entry in _entries(folder, root):
        if _hidden(entry.name) or entry.name in own or not _entry_is(entry, "dir", root):
            continue
        found.append(_checked_path(entry, root))
    return sorted(found, key=lambda p: p.name)


ZIP_METADATA_FOLDER = "__MACOSX"
"""What macOS's zip adds beside the files (their ``._`` metadata): a folder of a dataset
unzipped elsewhere, ignored as hidden ones are."""


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == ZIP_METADATA_FOLDER


def unread_entries(folder: Path, root: Path, images: bool = False) -> tuple[list[str], list[str]]:
    """The visible names directly in ``folder`` that a listing of images leaves out: its
    folders (automl's own excepted) and its files of other types (with ``images``, its
    image files too: a dataset's top folder, where no file is read; else image names that
    no file holds, such as links to nothing), each name-sorted.

    Raises:
        DatasetError: If ``folder`` cannot be listed.
    """
    own = {path.name for path in own_folders() if path.parent == folder}
    folders, files = [], []
    for entry in _entries(folder, root):
        if _hidden(entry.name) or entry.name in own:
            continue
        try:
            is_folder = _entry_is(entry, "dir", root)
        except DatasetError:  # a link into a folder this process may not read: left out too
            is_folder = False
        if is_folder:
            folders.append(entry.name)
        elif images or _suffix(entry.name) not in IMAGE_SUFFIXES or not _is_file(entry, root):
            files.append(entry.name)  # an image's name on a link to nothing too
    return sorted(folders), sorted(files)


def _is_file(entry: os.DirEntry[str], root: Path) -> bool:
    try:
        return _entry_is(entry, "file", root)
    except DatasetError:
        return False


def own_folders() -> list[Path]:
    """automl's own folders, resolved: ``AUTOML_ARTIFACTS_DIR`` and ``AUTOML_CACHE_DIR``.

    automl writes them, maybe inside a dataset folder (``AUTOML_DATA_ROOT=.`` and
    ``path: .`` with the default folders), where they are no class of the data.
    """
    settings = current_settings()
    found = []
    for path in (settings.artifacts_dir, settings.cache_dir):
        try:
            found.append(path.resolve())
        except (OSError, RuntimeError):  # a symlink loop: it cannot be a listed folder either
            continue
    return found


def image_files(folder: Path, root: Path, natural: bool = False) -> list[Path]:
    """The visible image files directly in ``folder``, sorted by name.

    Args:
        folder: The folder to list.
        root: The resolved data root; symlinked files must resolve inside it.
        natural: Sort numbers by value (``2`` before ``10``), as frames of a clip are.

    Raises:
        DatasetError: If ``folder`` cannot be listed, or an image file cannot be read, has
            a name that is not UTF-8, or is a symlink that points outside the root.
    """
    found = []
    for entry in _entries(folder, root):
        if entry.name.startswith(".") or _suffix(entry.name) not in IMAGE_SUFFIXES:
            continue
        if _entry_is(entry, "file", root):
            found.append(_checked_path(entry, root))
    return sorted(found, key=lambda p: natural_key(p.name) if natural else p.name)


def _entries(folder: Path, root: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder``; one that cannot be listed is a ``DatasetError``."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError as exc:
        shown = relative_name(folder, root)
        raise DatasetError(f"cannot list folder {shown!r}: {exc.strerror}") from None


def _entry_is(entry: os.DirEntry[str], kind: Literal["dir", "file"], root: Path) -> bool:
    """Whether ``entry`` is a folder (``kind="dir"``) or a file, symlinks followed."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError as exc:
        # DirEntry answers False for a symlink whose target is missing; a loop is as broken.
        if exc.errno == errno.ELOOP:
            return False
        shown = printable(relative_name(Path(entry.path), root))
        raise DatasetError(f"cannot read {shown}: {exc.strerror}") from None


def _checked_path(entry: os.DirEntry[str], root: Path) -> Path:
    """The entry's path, once its name is UTF-8 and, if a symlink, it stays inside ``root``."""
    path = Path(entry.path)
    if not _is_utf8(entry.name):
        # Such names (often from archives made on Windows) cannot be cached or reported.
        shown = printable(relative_name(path, root))
        raise DatasetError(f"the name of {shown} is not valid UTF-8; rename it")
    if entry.is_symlink():
        _check_link(path, root)
    return path


def _suffix(name: str) -> str:
    """``Path(name).suffix.lower()`` without building a path (listings hold many files)."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _check_link(path: Path, root: Path) -> None:
    shown = relative_name(path, root)
    if not resolve(path, repr(shown)).is_relative_to(root):
        raise DatasetError(f"{shown!r} is a symlink outside the data root (AUTOML_DATA_ROOT)")


def file_identities(files: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """Each listed file's identity (device, inode), by its name with folder symlinks resolved.

    The identity follows a file symlink to its target, and hard links share it, so two
    names of one file compare equal; the names stay where the files were listed (each
    folder resolved once) for messages. One ``stat`` per file.

    Returns:
        ``{path: (st_dev, st_ino)}``, the path as a string.

    Raises:
        DatasetError: If a folder cannot be resolved or a file cannot be read.
    """
    folders: dict[Path, str] = {}
    identities = {}
    for path in files:
        folder = folders.get(path.parent)
        if folder is None:
            shown = repr(relative_name(path.parent))
            folder = folders[path.parent] = str(resolve(path.parent, shown))
        identities[os.path.join(folder, path.name)] = file_identity(path)
    return identities


def file_identity(path: Path) -> tuple[int, int]:
    """The file's identity (device, inode), symlinks followed: equal for two names of it.

    Raises:
        DatasetError: If the file cannot be read.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        shown = printable(relative_name(path))
        raise DatasetError(f"cannot read {shown}: {exc.strerror}") from None
    return info.st_dev, info.st_ino
