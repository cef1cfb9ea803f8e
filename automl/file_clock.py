"""The clock that stamps a folder's files: on a network mount, the file server's.

A sweep that removes files untouched for a while compares their modification times with
"now"; on NFS those times come from the file server, whose clock may be far from this
machine's (a machine an hour ahead would remove another machine's write in progress).
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path

STALE_SIBLING_S = 3600.0
"""Age past which a hidden temporary file beside a target is a killed write's (kill -9,
power loss): the CLI writes its files (a CSV, a report) in seconds."""


def folder_now(directory: Path, prefix: str, suffix: str = "") -> float | None:
    """Now, on the clock that stamps files in ``directory``: the modification time of a
    probe file created there (named ``prefix``...``suffix``, so that the folder's own sweep
    finds one a crash left) and removed at once.

    Args:
        directory: An existing folder.
        prefix: The start of the probe's name.
        suffix: The end of the probe's name.

    Returns:
        The file system's time, or None if no file can be created there (read-only, out of
        inodes): a sweep then removes nothing rather than judge by this machine's clock.
    """
    try:
        descriptor, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    except OSError:
        return None
    try:
        return os.fstat(descriptor).st_mtime
    finally:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(name)


def remove_stale_siblings(path: Path, infix: str, suffix: str = "") -> None:
    """Deletes the temporary files that killed writes of ``path`` left beside it: those
    named ``.NAME{infix}...{suffix}`` (NAME: ``path``'s) untouched for ``STALE_SIBLING_S``.

    Args:
        path: The file the writes were for.
        infix: What follows ``.NAME`` in a temporary file's name (``.partial-``).
        suffix: How such a name ends.
    """
    prefix = f".{path.name}{infix}"
    now = folder_now(path.parent, prefix, suffix)
    if now is None:
        return
    cutoff = now - STALE_SIBLING_S
    for leftover in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        with contextlib.suppress(OSError):  # another writer's, or gone meanwhile
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()
