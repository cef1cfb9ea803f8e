"""Decoding one image file: images deeper than 8 bits are scaled to 8 bits, not clipped."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from automl.data.decode import Preprocess, decode_image, to_eight_bit

DEEP = np.array([[8000] * 2 + [56000] * 2] * 4, np.uint16)
"""A 4x4 16-bit image: dark left half, bright right half."""
EIGHT_BIT = np.array([[31] * 2 + [218] * 2] * 4, np.uint8)
"""``DEEP`` scaled to 8 bits: the top 8 bits of each value."""


@pytest.mark.parametrize(("channels", "count"), [("grayscale", 1), ("rgb", 3)])
def test_sixteen_bit_png_keeps_its_top_eight_bits(
    tmp_path: Path, channels: Literal["rgb", "grayscale"], count: int
) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(DEEP).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    decoded = decode_image(str(path), Preprocess(4, 4, channels=channels))
    assert decoded.shape == (count, 4, 4)
    assert (decoded == EIGHT_BIT).all()


def test_sixteen_bit_pgm_read_as_32_bit_integers_scales_alike(tmp_path: Path) -> None:
    path = tmp_path / "deep.pgm"  # Pillow reads 16-bit PGM as mode I
    path.write_bytes(b"P5\n4 4\n65535\n" + DEEP.astype(">u2").tobytes())
    with Image.open(path) as opened:
        assert opened.mode == "I"
    assert (decode_image(str(path), Preprocess(4, 4, channels="grayscale"))[0] == EIGHT_BIT).all()


def test_32_bit_integers_are_clipped_to_16_bits_first() -> None:
    values = np.array([[-5, 0, 255, 8000, 56000, 65535, 70000]], np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    scaled = to_eight_bit(image)
    assert scaled.mode == "L"
    assert np.asarray(scaled).tolist() == [[0, 0, 0, 31, 218, 255, 255]]


def test_eight_bit_images_are_left_alone() -> None:
    for mode in ("L", "RGB", "RGBA", "P", "1"):
        image = Image.new(mode, (2, 2))
        assert to_eight_bit(image) is image
