"""Files staged for Optuna's ``upload_artifact``, which uploads a file by its path and
records the file's name (what optuna-dashboard shows and downloads as).

Each thread stages its files in its own folder under one scratch folder per process, made
once: a temporary folder made and removed per upload cost a worker more than half a
millisecond a trial, more than the rest of writing a model card but its syncs.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRATCH_PREFIX = "automl-uploads-"


@contextmanager
def staged_file(filename: str, data: bytes) -> Iterator[str]:
    """``data`` in a file named ``filename``, removed on exit.

    Args:
        filename: The file's name, without folders.
        data: Its content.

    Yields:
        The file's path.
    """
    folder = _own_root() / f"{os.getpid()}-{threading.get_ident()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / filename
    try:
        path.write_bytes(data)
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


def _own_root() -> Path:
    """The scratch folder, made again (another name) if it is no longer this user's alone:
    a cleaner of /tmp removed it, and anyone may have made a folder by its name since."""
    root = _scratch_root()
    try:
        status = os.lstat(root)
    except FileNotFoundError:
        status = None
    mine = (
        status is not None
        and stat.S_ISDIR(status.st_mode)
        and status.st_uid == os.getuid()
        and not status.st_mode & 0o077
    )
    if not mine:
        _scratch_root.cache_clear()
        root = _scratch_root()
    return root


@functools.cache
def _scratch_root() -> Path:
    owner = os.getpid()
    remove_orphans(Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{owner}-"))
    # Only by the process that made it: a forked child inherits this cache (and the hook).
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))
    return root


def remove_orphans(folder: Path) -> list[str]:
    """Removes the scratch folders in ``folder`` of this user's processes that are gone (a
    process killed with SIGKILL leaves its own).

    Returns:
        The names of the folders removed.
    """
    removed = []
    for path in folder.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name.removeprefix(SCRATCH_PREFIX).partition("-")[0]
        try:
            if not pid.isdigit() or path.lstat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True


__all__ = ["SCRATCH_PREFIX", "remove_orphans", "staged_file"]
