"""Bounding the memory of images decoded at once for predictions.

Each image is checked against ``AUTOML_LIMIT_MAX_IMAGE_PIXELS`` before it is decoded, but
requests decode in parallel (the API's thread pool): a dozen near-limit images at once
took 2.4 GB. The budget lets small images through side by side and makes large ones
wait their turn, so the pixels being decoded at any time stay within ``DECODE_PIXELS``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

DECODE_PIXELS = 80_000_000
"""Pixels one process decodes at once: two images at the default ``max_image_pixels``
(about 320 MB as RGBA, more while they are converted and resized)."""


class PixelBudget:
    """Pixels that threads may decode at once; an image larger than the whole budget
    waits until it can take all of it.

    Args:
        pixels: The budget.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
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
                self._changed.notify_all()


DECODING = PixelBudget(DECODE_PIXELS)
"""The budget of this process's prediction and annotation decodes."""
