"""Fixtures for the file-based sources: a temporary data root and cache, tiny image writers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.data import forget_loaded


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``AUTOML_DATA_ROOT`` and ``AUTOML_CACHE_DIR`` in the test's folder, memory cleared."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(root))
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    forget_loaded()
    yield root.resolve()
    forget_loaded()


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
