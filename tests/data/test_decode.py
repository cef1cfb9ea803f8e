"""Decoding one image file: formats, EXIF orientation, bit depth, fitting to the size."""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from automl.data import decode
from automl.data.decode import (
    Preprocess,
    decode_image,
    fit_image,
    load_oriented,
    pad_image,
    to_eight_bit,
)
from automl.data.errors import DatasetError
from tests.delivery.trained import png_declaring

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
    with Image.open(path) as opened:  # not a file format training takes: mode I is the point
        assert opened.mode == "I"
        image = load_oriented(opened, Preprocess(4, 4, channels="grayscale"))
    assert (np.asarray(image) == EIGHT_BIT).all()


def _transparent_bar(folder: Path) -> dict[str, Path]:
    """A black vertical bar on a transparent background, in every way a PNG stores
    transparency; the transparent pixels store a dark color (black where they can)."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, 3:5, 3] = 255  # only the bar is opaque
    gray = np.full((8, 8), 100, np.uint8)
    gray[:, 3:5] = 0
    deep = gray.astype(np.uint16) * 257
    deep[0, 0] += 1  # scales to 100 too, but is not the transparent value: shown
    images = {
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "LA": Image.fromarray(rgba[:, :, [0, 3]], "LA"),
        "P": Image.fromarray(rgba, "RGBA").quantize(2),
        "L": Image.fromarray(gray),  # one gray value (here 100) is transparent
        "I;16": Image.fromarray(deep),  # one 16-bit gray value (100 * 257) is transparent
    }
    transparency = {"P": images["P"].getpixel((0, 0)), "L": 100, "I;16": 100 * 257}
    paths = {}
    for mode, image in images.items():
        paths[mode] = folder / f"{mode}.png"
        image.save(paths[mode], transparency=transparency.get(mode))
    return paths


@pytest.mark.parametrize(("channels", "count"), [("grayscale", 1), ("rgb", 3)])
def test_transparent_pixels_are_white(
    tmp_path: Path, channels: Literal["rgb", "grayscale"], count: int
) -> None:
    """Found by a tester: the alpha was dropped, so the transparent background showed the
    black stored under it, the bar vanished, and predict answered the other class with
    certainty."""
    bar = np.full((count, 8, 8), 255, np.uint8)
    bar[:, :, 3:5] = 0
    for mode, path in _transparent_bar(tmp_path).items():
        with Image.open(path) as opened:
            assert opened.mode == mode
        decoded = decode_image(str(path), Preprocess(8, 8, channels=channels))
        expected = bar.copy()
        if mode == "I;16":  # found by a tester: Pillow dropped the 16-bit transparent value
            expected[:, 0, 0] = 100
        assert decoded.tolist() == expected.tolist(), mode


def test_half_transparent_pixels_blend_with_white(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("RGBA", (2, 2), (0, 0, 200, 128)).save(path)
    decoded = decode_image(str(path), Preprocess(2, 2))
    assert decoded[:, 0, 0].tolist() == [127, 127, 227]


def test_32_bit_integers_are_clipped_to_16_bits_first() -> None:
    values = np.array([[-5, 0, 255, 8000, 56000, 65535, 70000]], np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    scaled = to_eight_bit(image)
    assert scaled.mode == "L"
    assert np.asarray(scaled).tolist() == [[0, 0, 0, 31, 218, 255, 255]]


def _transparent_images() -> dict[str, Image.Image]:
    """The kinds of transparency image files open with, random colors and alphas (and
    ``RGBa``; Pillow converts no ``La`` to RGBA, and no file opens as one)."""
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (9, 7), np.uint8))
    rgb = Image.fromarray(rng.integers(0, 256, (9, 7, 3), np.uint8))
    alpha = Image.fromarray(rng.integers(0, 256, (9, 7), np.uint8))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    gray_keyed, rgb_keyed = gray.copy(), rgb.copy()
    gray_keyed.info["transparency"] = int(np.asarray(gray)[0, 0])
    rgb_keyed.info["transparency"] = tuple(int(v) for v in np.asarray(rgb)[0, 0])
    return {
        "LA": Image.merge("LA", (gray, alpha)),
        "RGBA": Image.merge("RGBA", (*rgb.split(), alpha)),
        "RGBa": Image.merge("RGBA", (*rgb.split(), alpha)).convert("RGBa"),
        "PA": Image.merge("RGBA", (*rgb.split(), alpha)).convert("PA"),
        "P+tRNS": palette,
        "L+tRNS": gray_keyed,
        "RGB+tRNS": rgb_keyed,
        "16-bit+tRNS": to_eight_bit(_sixteen_bit_keyed()),
    }


def _sixteen_bit_keyed() -> Image.Image:
    image = Image.fromarray(DEEP)
    image.info["transparency"] = 8000
    return image


@pytest.mark.parametrize("kind", list(_transparent_images()))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_transparency_becomes_white_as_compositing_onto_white_does(kind: str, mode: str) -> None:
    """``on_white`` blends without RGBA copies (a 40-megapixel 16-bit image with a
    transparent value took 660 MB): pixel for pixel what Pillow's compositing gives."""
    image = _transparent_images()[kind]
    rgba = image.convert("RGBA")
    composited = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)

    blended = decode.on_white(image)

    assert blended.size == image.size
    assert np.array_equal(np.asarray(blended.convert(mode)), np.asarray(composited.convert(mode)))


def test_a_side_over_65535_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "strip.png"
    path.write_bytes(png_declaring(65_536, 1))
    with pytest.raises(DatasetError, match="is 65536x1 pixels; no side may be over 65535"):
        decode_image(str(path), Preprocess(8, 8))
    path.write_bytes(png_declaring(65_535, 1))
    with pytest.raises(DatasetError, match="cannot decode"):  # checked, then decoded: truncated
        decode_image(str(path), Preprocess(8, 8))


def test_eight_bit_images_are_left_alone() -> None:
    for mode in ("L", "RGB", "RGBA", "P", "1"):
        image = Image.new(mode, (2, 2))
        assert to_eight_bit(image) is image


def random_rgb(height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8))


def save_oriented(image: Image.Image, path: Path, orientation: int) -> Path:
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_malformed_exif_keeps_the_pixels_and_the_orientation(tmp_path: Path) -> None:
    image = random_rgb(16, 24)
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Cam"
    # Retagged as FillOrder, a SHORT holding ASCII: Pillow cannot write this EXIF back.
    raw = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x0a\x00\x02")
    image.save(tmp_path / "photo.jpg", exif=raw)
    decoded = decode_image(str(tmp_path / "photo.jpg"), Preprocess(24, 16), str(tmp_path))
    with Image.open(tmp_path / "photo.jpg") as opened:
        upright = opened.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(decoded, np.asarray(upright).transpose(2, 0, 1))


def test_unparsable_exif_decodes_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = save_oriented(random_rgb(8, 12), tmp_path / "photo.jpg", 6)

    def broken_exif(self: Image.Image) -> Image.Exif:
        raise struct.error("required argument is not an integer")

    monkeypatch.setattr(Image.Image, "getexif", broken_exif)
    caplog.set_level(logging.DEBUG, logger="automl.data")
    assert decode_image(str(path), Preprocess(8, 12)).shape == (3, 8, 12)  # not turned
    assert "ignoring unreadable EXIF data" in caplog.text


def test_unexpected_pillow_errors_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random_rgb(4, 4).save(tmp_path / "a.png")

    def failing(*args: object) -> Image.Image:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(decode, "load_oriented", failing)
    with pytest.raises(DatasetError) as caught:
        decode_image(str(tmp_path / "a.png"), Preprocess(4, 4), str(tmp_path))
    assert str(caught.value) == "cannot decode image 'a.png': unpack requires a buffer of 4 bytes"


def test_only_the_formats_prediction_takes_are_decoded(tmp_path: Path) -> None:
    random_rgb(4, 4).save(tmp_path / "tiff.jpg", format="TIFF")
    random_rgb(4, 4).save(tmp_path / "png.jpg", format="PNG")
    (tmp_path / "text.png").write_text("not an image")
    assert decode_image(str(tmp_path / "png.jpg"), Preprocess(4, 4)).shape == (3, 4, 4)
    expected = {
        "tiff.jpg": "it is a TIFF image; images must be png, jpeg, webp or bmp, whatever their "
        "suffix",
        "text.png": "not a png, jpeg, webp or bmp image (or its header is damaged)",
    }
    for name, reason in expected.items():
        with pytest.raises(DatasetError) as caught:
            decode_image(str(tmp_path / name), Preprocess(4, 4), str(tmp_path))
        assert str(caught.value) == f"cannot decode image {name!r}: {reason}"


def test_quarter_turned_jpegs_decode_at_full_resolution(tmp_path: Path) -> None:
    rows, columns = np.indices((200, 800))
    board = Image.fromarray(((rows // 3 + columns // 3) % 2 * 255).astype(np.uint8)).convert("RGB")
    files = {
        1: save_oriented(board.transpose(Image.Transpose.ROTATE_270), tmp_path / "1.jpg", 1),
        6: save_oriented(board, tmp_path / "6.jpg", 6),  # shown 200 wide, 800 tall
    }
    prep = Preprocess(height=32, width=128)
    for orientation, path in files.items():
        with Image.open(path) as opened:  # no draft: every pixel decoded
            upright = opened.transpose(Image.Transpose.ROTATE_270) if orientation == 6 else opened
            full = fit_image(upright.convert("RGB"), prep).astype(int)
        error = np.abs(decode_image(str(path), prep).astype(int) - full).mean()
        assert error < 1, (orientation, error)


# 1 x 16 and 16 x 1 scale to exactly half a pixel, which Pillow's pad rounds to none.
@pytest.mark.parametrize(("width", "height"), [(3, 400), (400, 3), (1, 16), (16, 1)])
def test_padding_keeps_a_very_thin_image_visible(tmp_path: Path, width: int, height: int) -> None:
    Image.new("RGB", (width, height), (200, 0, 0)).save(tmp_path / "thin.png")
    decoded = decode_image(str(tmp_path / "thin.png"), Preprocess(8, 8, fit="pad"))
    red = decoded[0] > 100
    assert red.sum() == 8 and (red.all(axis=0).any() or red.all(axis=1).any())
    assert decoded[1:].max() == 0
    assert decoded[:, 0].max() == 0 or decoded[:, :, 0].max() == 0  # black around it


def test_padding_an_ordinary_image_is_pillows() -> None:
    image = random_rgb(5, 13)
    padded = ImageOps.pad(image, (8, 8), method=Image.Resampling.BILINEAR, color=0)
    assert np.array_equal(pad_image(image, (8, 8)), np.asarray(padded))


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [
        (5000, 5000, "5000x5000 = 25000000"),
        (50_000, 50_000, f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}"),
    ],
    ids=["over the limit", "over pillow's limit too"],
)
def test_images_with_too_many_pixels_are_refused_from_the_header(
    tmp_path: Path, width: int, height: int, size: str
) -> None:
    """Found by a tester: past Pillow's own limit, training said Pillow's words ("could be
    decompression bomb DOS attack") instead of naming the setting."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(width, height))
    with pytest.raises(DatasetError) as caught:
        decode_image(str(path), Preprocess(4, 4), root=str(tmp_path), max_pixels=1_000_000)
    assert str(caught.value) == (
        f"image 'bomb.png' has {size} pixels; max_image_pixels allows 1000000 "
        "(AUTOML_LIMIT_MAX_IMAGE_PIXELS)"
    )


def test_pillows_own_warning_of_large_images_stays_off_stderr(tmp_path: Path) -> None:
    """Found by a tester: images between Pillow's limit and twice it (allowed by a raised
    max_image_pixels, or refused by automl's) printed Pillow's two-line
    DecompressionBombWarning on stderr (training logs, ``automl predict``, the API's log)."""
    path = tmp_path / "large.png"
    Image.new("L", (16, 16)).save(path)
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from automl.data.decode import Preprocess, decode_image\n"
        "Image.MAX_IMAGE_PIXELS = 200  # 256 pixels are past it, as 100 million are\n"
        "print(decode_image(sys.argv[1], Preprocess(4, 4, channels='grayscale')).shape)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "(1, 4, 4)\n" and done.stderr == ""


def test_an_empty_file_is_called_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        decode_image(str(tmp_path / "empty.png"), Preprocess(4, 4), root=str(tmp_path))
    assert str(caught.value) == "cannot decode image 'empty.png': the file is empty (0 bytes)"
