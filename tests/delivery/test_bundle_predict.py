"""The bundle's standalone ``predict.py`` decodes every image as training did: its own copy
of the decoding (numpy and Pillow only) gives the pixels ``automl.data.decode`` gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl.config import Limits
from automl.data.decode import Preprocess, decode_image
from automl.data.errors import DatasetError
from automl.data.paths import IMAGE_FORMATS
from automl.delivery import bundle_predict
from tests.delivery.trained import png_declaring

ORIENTATION = 0x0112


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _with_orientation(image: Image.Image, path: Path, orientation: int) -> Path:
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes())
    return path


def _malformed_exif_jpeg(path: Path) -> Path:
    image = _noise(16, 16)
    exif = image.getexif()
    exif[ORIENTATION], exif[0x010F] = 6, "Cam"
    # The Make tag (ASCII) renumbered as FillOrder (SHORT): Pillow's parser chokes on it.
    image.save(path, exif=exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x0a\x00\x02"))
    return path


def _images(folder: Path) -> list[Path]:
    """Images whose decoding has edge cases: quarter turns of JPEGs (reduced-scale
    decoding), every EXIF orientation, very thin images, malformed EXIF, 16 bits,
    transparency."""
    paths = [
        _with_orientation(_noise(80, 20, turn), folder / f"turned{turn}.jpg", turn)
        for turn in range(1, 9)
    ]
    paths.append(_with_orientation(_noise(30, 10), folder / "turned.png", 6))
    _noise(3, 400).save(folder / "thin.png")
    _noise(500, 2).save(folder / "flat.png")
    _noise(1, 32).save(folder / "half.png")  # exactly half a pixel wide at 16 px high
    thin = [folder / name for name in ("thin.png", "flat.png", "half.png")]
    paths += [*thin, _malformed_exif_jpeg(folder / "bad.jpg")]
    deep = (np.arange(12 * 9, dtype=np.uint16).reshape(9, 12) * 600).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep.png")
    Image.fromarray(deep).save(folder / "deep_keyed.png", transparency=int(deep[4, 4]))
    see_through = _noise(10, 12, seed=1).convert("RGBA")
    see_through.putalpha(_noise(10, 12, seed=2).convert("L"))
    see_through.save(folder / "alpha.png")
    _noise(9, 9, seed=3).quantize(4).save(folder / "palette.png", transparency=0)
    extra = ("deep.png", "deep_keyed.png", "alpha.png", "palette.png")
    return [*paths, *(folder / name for name in extra)]


@pytest.mark.parametrize("fit", ["crop", "pad"])
@pytest.mark.parametrize(("channels", "count"), [("rgb", 3), ("grayscale", 1)])
@pytest.mark.parametrize(("width", "height"), [(8, 16), (12, 12)])
def test_predict_py_decodes_as_training_did(
    tmp_path: Path, fit: str, channels: str, count: int, width: int, height: int
) -> None:
    prep = Preprocess(height=height, width=width, fit=fit, channels=channels)  # type: ignore[arg-type]
    spec = {"channels": count, "width": width, "height": height, "fit": fit}
    spec |= {"mean": [0.0] * count, "std": [1.0] * count, "scale": 1.0}
    for path in _images(tmp_path):
        trained = decode_image(str(path), prep).astype(np.float32)
        assert trained.any(), f"{path.name} decoded to black"
        shown = bundle_predict.load(str(path), spec, Limits().max_image_pixels)
        np.testing.assert_array_equal(shown, trained, path.name)


def test_predict_py_reads_the_formats_training_reads() -> None:
    assert bundle_predict.FORMATS == IMAGE_FORMATS  # a copy: the bundle runs without automl


def test_predict_py_refuses_the_formats_training_refuses(tmp_path: Path) -> None:
    tiff = tmp_path / "tiff.png"
    _noise(8, 8).save(tiff, format="TIFF")
    spec = {"channels": 3, "width": 8, "height": 8, "fit": "crop"}
    with pytest.raises(DatasetError, match="it is a TIFF image"):
        decode_image(str(tiff), Preprocess(height=8, width=8))
    with pytest.raises(Image.UnidentifiedImageError) as refused:
        bundle_predict.load(str(tiff), spec | {"mean": [0] * 3, "std": [1] * 3, "scale": 1}, 100)
    assert bundle_predict.reason(refused.value, str(tiff)) == "not a png, jpeg, webp or bmp image"


def test_predict_py_says_a_file_is_empty(tmp_path: Path) -> None:
    """Found by a tester: it said "not a png, jpeg, webp or bmp image", where training, the
    API and the CLI say the file is empty."""
    empty = tmp_path / "empty.png"
    empty.touch()
    spec = {"channels": 3, "width": 8, "height": 8, "fit": "crop"}
    with pytest.raises(Image.UnidentifiedImageError) as refused:
        bundle_predict.load(str(empty), spec | {"mean": [0] * 3, "std": [1] * 3, "scale": 1}, 100)
    assert bundle_predict.reason(refused.value, str(empty)) == "the file is empty (0 bytes)"


def test_predict_py_refuses_images_over_the_default_pixel_limit(tmp_path: Path) -> None:
    """Found by a tester: a 692 KB PNG declaring 13000x13700 pixels decoded in 1.4 GB
    where the API, the CLI and training refuse it from its header."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(8000, 5001))
    limit = Limits().max_image_pixels  # what a bundle's card holds by default
    with pytest.raises(DatasetError, match="8000x5001 = 40008000 pixels"):
        decode_image(str(bomb), Preprocess(height=8, width=8))
    spec = {"channels": 1, "width": 8, "height": 8, "fit": "crop"}
    with pytest.raises(ValueError) as refused:
        bundle_predict.load(str(bomb), spec | {"mean": [0], "std": [1], "scale": 1}, limit)
    assert bundle_predict.reason(refused.value, str(bomb)) == "8000x5001 pixels: more than 40000000"
