"""Bounding the memory of images decoded at once for predictions.

Each image is checked against ``AUTOML_LIMIT_MAX_IMAGE_PIXELS`` before it is decoded, but
requests decode in parallel (the API's thread pool): a dozen near-limit images at once
took 2.4 GB. The budget lets small images through side by side and makes large ones
wait their turn, so the pixels being decoded at any time stay within ``DECODE_PIXELS``.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DECODE_PIXELS = 80_000_000
"""Pixels one process decodes at once: two images at the default ``max_image_pixels``
(about 320 MB as RGBA, more while they are converted and resized)."""


TRIM_AFTER_PIXELS = 4_000_000
"""An image at least this large gives its memory back to the system once no decode runs
(``release_freed_memory``)."""


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return lambda: trim(0)


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Returns the memory freed by decodes to the system.

    glibc keeps what a thread freed in that thread's arena for its next allocations: after
    a burst of near-limit images on several threads the API held 2.3 GB it no longer used
    (570 MB after 6 images on 3 threads here), until the next burst reused it.
    """
    if _TRIM is not None:
        _TRIM()


class PixelBudget:
    """Pixels that threads may decode at once; an image larger than the whole budget
    waits until it can take all of it. When the last decode of a large image ends, the
    freed memory goes back to the system (``release_freed_memory``).

    Args:
        pixels: The budget.
        release: What gives freed memory back (a test's spy).
    """

    def __init__(self, pixels: int, release: Callable[[], None] = release_freed_memory) -> None:
        self.pixels = pixels
        self.release = release
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        """Pixels held now."""
        with self._changed:
            return self._used

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Holds ``pixels`` of the budget while the block runs, waiting for them first."""
        pixels = min(pixels, self.pixels)
        with self._changed:
            self._changed.wait_for(lambda: self._used + pixels <= self.pixels)
            self._used += pixels
        try:
            yield
        finally:
            with self._changed:
                self._used -= pixels
                idle = self._used == 0
                self._changed.notify_all()
            if idle and pixels >= TRIM_AFTER_PIXELS:
                self.release()


DECODING = PixelBudget(DECODE_PIXELS)
"""The budget of this process's prediction and annotation decodes."""
