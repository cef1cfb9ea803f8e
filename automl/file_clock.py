"""The clock that stamps a folder's files: on a network mount, the file server's.

A sweep that removes files untouched for a while compares their modification times with
"now"; on NFS those times come from the file server, whose clock may be far from this
machine's (a machine an hour ahead would remove another machine's write in progress).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
