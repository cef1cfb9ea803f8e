"""Tiny image writers for the file-based sources (``data_root`` lives in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, array: np.ndarray, **save: object) -> Path:
    """Writes a uint8 ``(H, W)`` or ``(H, W, 3)`` array; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def write_class_folder(
    folder: Path,
    counts: Mapping[str, int],
    size: tuple[int, int] = (6, 8),
    suffix: str = ".png",
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Writes ``counts[class]`` random RGB images per class as ``folder/<class>/<i><suffix>``.

    Class ``i`` (in sorted order) is tinted so classes differ on average.
    """
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for index, (name, count) in enumerate(sorted(counts.items())):
        written[name] = []
        for i in range(count):
            array = rng.integers(0, 128, (*size, 3), dtype=np.uint8)
            array[..., index % 3] += 100
            written[name].append(write_image(folder / name / f"{i}{suffix}", array))
    return written
