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
    folder = _scratch_root() / f"{os.getpid()}-{threading.get_ident()}"
    folder.mkdir(parents=True, exist_ok=True)  # again if a cleaner of /tmp removed it
    path = folder / filename
    try:
        path.write_bytes(data)
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


@functools.cache
def _scratch_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    owner = os.getpid()
    # Only by the process that made it: a forked child inherits this cache (and the hook).
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(root, ignore_errors=True))
    return root


__all__ = ["SCRATCH_PREFIX", "staged_file"]
