"""Decoding image files into uint8 arrays: one image, or many on every core.

A sample is a tuple of files: one for a still image, several (the frames of a clip) for
a sequence. Decoding many samples runs in a process pool in chunks and logs progress on
the ``automl.data`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from automl.config import Limits
from automl.data.errors import DatasetError
from automl.data.paths import FORMAT_LIST, IMAGE_FORMATS
from automl.wording import counted

logger = logging.getLogger("automl.data")

# Every image's pixel count is checked against max_image_pixels (at most twice Pillow's own
# limit, past which Pillow refuses to open it) before anything is decoded: Pillow's warning
# between its limit and twice it would only add two lines of stderr to that refusal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

PARALLEL_MIN_BYTES = 64 * 2**20
"""Below this many bytes of files one process decodes them: starting a pool of processes
(each importing torch) costs seconds, more than decoding some thousand small images."""

Sample = tuple[str, ...]


@dataclass(frozen=True)
class Preprocess:
    """How every image is turned into a fixed-size uint8 array.

    ``crop`` scales the image to cover ``height x width`` and cuts the center; ``pad``
    scales it to fit inside and pads the borders with black.
    """

    height: int
    width: int
    fit: Literal["crop", "pad"] = "crop"
    channels: Literal["rgb", "grayscale"] = "rgb"

    @property
    def num_channels(self) -> int:
        """3 for RGB, 1 for grayscale."""
        return 3 if self.channels == "rgb" else 1

    @property
    def mode(self) -> str:
        """The Pillow mode images are converted to."""
        return "RGB" if self.channels == "rgb" else "L"

    @property
    def sample_bytes(self) -> int:
        """Bytes of one decoded image (uint8)."""
        return self.num_channels * self.height * self.width


def decode_image(
    path: str, prep: Preprocess, root: str = "", max_pixels: int | None = None
) -> np.ndarray:
    """Decodes, orients (EXIF), converts and resizes one image file.

    Args:
        path: The image file.
        prep: Target size, fit and channels.
        root: Folder that error messages show paths relative to.
        max_pixels: Most pixels the image may have, read from its header before anything
            is decoded (default: ``AUTOML_LIMIT_MAX_IMAGE_PIXELS``).

    Returns:
        uint8 array shaped ``(C, H, W)``.

    Raises:
        DatasetError: If the file cannot be read or decoded, is not a png, jpeg, webp or
            bmp image (whatever its suffix, as prediction refuses it), or has too many
            pixels; the message names the file.
    """
    limit = Limits().max_image_pixels if max_pixels is None else max_pixels
    shown = os.path.relpath(path, root) if root else path
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as opened:
            refusal = size_refusal(shown, opened.width, opened.height, limit)
            if refusal is not None:  # a decompression bomb, refused before decoding
                raise DatasetError(refusal)
            image = load_oriented(opened, prep)
    except (DatasetError, MemoryError):
        raise
    except Image.DecompressionBombError:
        raise DatasetError(too_many_pixels(shown, PAST_PILLOWS_LIMIT, limit)) from None
    except UnidentifiedImageError:
        raise DatasetError(f"cannot decode image {shown!r}: {_unidentified(path)}") from None
    except Exception as exc:  # Pillow raises many kinds on corrupt data (struct.error...)
        # Pillow names the file by its absolute path: the message shows the data root's own.
        reason = " ".join(str(exc).replace(str(path), shown).split()) or type(exc).__name__
        raise DatasetError(f"cannot decode image {shown!r}: {reason}") from None
    return fit_image(image, prep)


PAST_PILLOWS_LIMIT = f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}"
"""The size of an image that Pillow refuses to open itself (twice its ``MAX_IMAGE_PIXELS``),
before its size can be read."""


MAX_SIDE = 65_535
"""Longest side of an image, in pixels (JPEG's own limit): a 1 x 40,000,000 PNG, within
``max_image_pixels`` and 78 KB in size, took 1.3 s to decode, row by row."""


def size_refusal(name: str, width: int, height: int, limit: int) -> str | None:
    """Why an image of ``width x height`` pixels is refused before it is decoded (more than
    ``limit`` pixels, or a side over ``MAX_SIDE``), or None: training and serving alike."""
    if width * height > limit:
        return too_many_pixels(name, f"{width}x{height} = {width * height}", limit)
    if max(width, height) > MAX_SIDE:
        return f"image {name!r} is {width}x{height} pixels; no side may be over {MAX_SIDE}"
    return None


def too_many_pixels(name: str, size: str, limit: int) -> str:
    """Why an image of ``size`` pixels (``4000x3000 = 12000000``) is refused, decoding
    nothing (decompression bombs): training and serving say it alike."""
    return (
        f"image {name!r} has {size} pixels; max_image_pixels allows {limit} "
        "(AUTOML_LIMIT_MAX_IMAGE_PIXELS)"
    )


def _unidentified(path: str) -> str:
    """Why a file none of ``IMAGE_FORMATS`` opens was refused: its own format, if any."""
    with contextlib.suppress(OSError):
        if os.path.getsize(path) == 0:
            return "the file is empty (0 bytes)"
    try:
        with Image.open(path) as opened:
            other = opened.format
    except Exception:  # not an image Pillow knows, or damaged: the usual answer
        other = None
    if other is None:
        return f"not a {FORMAT_LIST} image (or its header is damaged)"
    return f"it is a {other} image; images must be {FORMAT_LIST}, whatever their suffix"


def load_oriented(opened: Image.Image, prep: Preprocess) -> Image.Image:
    """Decodes an opened image, oriented by its EXIF tag, in ``prep``'s mode.

    A JPEG much larger than the target size decodes at a reduced scale; a 16-bit image is
    scaled to 8 bits (``to_eight_bit``) and a transparent one composited onto white
    (``on_white``) before the conversion. Training and
    serving (``automl.delivery``) both decode through here, so their pixels are equal.

    Raises:
        OSError: If the data is truncated or corrupt (and what Pillow raises besides).
    """
    if opened.format == "JPEG":  # its EXIF is in the header, read before the draft scale
        orientation = exif_orientation(opened)
        size = (prep.width, prep.height)
        # The stored image of a quarter turn is the shown one's width and height swapped.
        opened.draft(prep.mode, size[::-1] if orientation in _QUARTER_TURNS else size)
    else:
        opened.load()  # decoding errors surface here; a PNG may keep its EXIF after the pixels
        orientation = exif_orientation(opened)
    method = _TRANSPOSE.get(orientation)
    image = opened if method is None else opened.transpose(method)
    return on_white(to_eight_bit(image)).convert(prep.mode)


def exif_orientation(opened: Image.Image) -> int:
    """The image's EXIF orientation (1 to 8), or 1 if it has none or its EXIF is malformed."""
    try:
        value = opened.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # Pillow's EXIF parser raises many kinds on malformed tags
        logger.debug("ignoring unreadable EXIF data: %r", exc)
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""How each EXIF orientation other than 1 (as stored) is turned upright."""
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


def to_eight_bit(image: Image.Image) -> Image.Image:
    """An integer grayscale image of more than 8 bits as 8-bit grayscale (mode ``L``, or
    ``LA`` where it has a transparent gray value); other images unchanged.

    Pillow's ``convert`` clamps such pixels to 0..255, which turns most of a 16-bit image
    white. Instead their top 8 bits are kept (``value >> 8``: 8000 -> 31, 56000 -> 218):
    of ``I;16*`` images (16-bit PNGs), and of mode ``I`` (32-bit integers) clipped to
    0..65535, since that is how Pillow reads 16-bit grayscale too (older versions; PGM files,
    whose values it scales to the 16-bit range) and the accepted formats
    (``automl.image_suffixes.IMAGE_SUFFIXES``) hold no more than 16 bits. The rule depends on
    the mode only, never on an image's own values, so every image of a dataset scales alike.
    """
    if image.mode != "I" and not image.mode.startswith("I;16"):
        return image
    stored = np.asarray(image)
    within = stored if stored.dtype.itemsize == 2 else np.clip(stored, 0, 65535)  # I;16*: as is
    eight = Image.fromarray((within >> 8).astype(np.uint8))
    del within
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return eight
    # A transparent gray value (a PNG's tRNS) becomes an alpha, for ``on_white``: scaled, it
    # would match other values too, and Pillow drops it with the 16-bit image. (Built as
    # bytes: an int64 mask took 320 MB for a 40-megapixel image.)
    alpha = np.where(stored == transparent, np.uint8(0), np.uint8(255))
    return Image.merge("LA", (eight, Image.fromarray(alpha)))


def on_white(image: Image.Image) -> Image.Image:
    """An image with transparency (an alpha channel, or a transparent palette entry or
    color) composited onto opaque white; other images unchanged.

    Dropping the alpha instead would show whatever color the transparent pixels happen to
    store, often black: a dark shape on a transparent background would vanish into it.
    White is where such images are usually shown (web pages, documents).
    """
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image
    if image.mode not in _STRAIGHT_ALPHA:  # palettes, transparent colors, premultiplied
        image = image.convert("RGBA")
    # The color channels blended with white by the alpha: what compositing onto opaque
    # white gives, pixel for pixel, without three more RGBA copies (a 16-bit gray image with
    # a transparent value took 660 MB at 40 megapixels).
    colors = image.convert(_STRAIGHT_ALPHA[image.mode])
    white = Image.new(colors.mode, image.size, _WHITE[: len(colors.mode)])
    return Image.composite(colors, white, image.getchannel("A"))


_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_STRAIGHT_ALPHA = {"LA": "L", "RGBA": "RGB"}
"""Modes with a straight (not premultiplied) alpha, and their color channels."""
_WHITE = (255, 255, 255)


def fit_image(image: Image.Image, prep: Preprocess) -> np.ndarray:
    """Resizes a decoded image to ``prep``'s size (crop or pad) as uint8 ``(C, H, W)``."""
    size = (prep.width, prep.height)
    if image.size != size:
        if prep.fit == "crop":
            image = ImageOps.fit(image, size, method=Image.Resampling.BILINEAR)
        else:
            image = pad_image(image, size)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def pad_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scales ``image`` to fit inside ``size`` (width, height), centered on black.

    As ``ImageOps.pad``, except that an image so thin that its short side would scale to
    less than half a pixel keeps one pixel of it instead of vanishing.
    """
    width, height = size
    if 2 * image.width * height > image.height and 2 * image.height * width > image.width:
        return ImageOps.pad(image, size, method=Image.Resampling.BILINEAR, color=0)
    inner = (1, height) if image.width < image.height else (width, 1)
    out = Image.new(image.mode, size, 0)
    offset = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    out.paste(image.resize(inner, Image.Resampling.BILINEAR), offset)
    return out


def decode_sample(
    sample: Sample, prep: Preprocess, root: str = "", max_pixels: int | None = None
) -> np.ndarray:
    """Decodes the files of one sample into ``(T, C, H, W)`` uint8 (``T = len(sample)``)."""
    limit = Limits().max_image_pixels if max_pixels is None else max_pixels
    return np.stack([decode_image(path, prep, root, limit) for path in sample])


def _decode_chunk(
    chunk: Sequence[Sample], prep: Preprocess, root: str, max_pixels: int
) -> tuple[np.ndarray, list[str]]:
    """The chunk's samples (a refused one left black) and why each refused one was."""
    frames = len(chunk[0])
    out = np.zeros((len(chunk), frames, prep.num_channels, prep.height, prep.width), np.uint8)
    refused = []
    for index, sample in enumerate(chunk):
        try:
            out[index] = decode_sample(sample, prep, root, max_pixels)
        except DatasetError as exc:
            refused.append(str(exc))
    return out, refused


MAX_NAMED_FILES = 5
"""Refused files that a decoding error names; it counts the others."""


def refused_files(refused: Sequence[str]) -> str:
    """One message for every refused file (each reason names its file): the first
    ``MAX_NAMED_FILES`` given, the rest counted, so that bad files can all be fixed at once.
    Training, predict and annotate word it alike."""
    if len(refused) == 1:
        return refused[0]
    named = "; ".join(refused[:MAX_NAMED_FILES])
    more = f"; and {len(refused) - MAX_NAMED_FILES} more" if len(refused) > MAX_NAMED_FILES else ""
    return f"{len(refused)} files cannot be used: {named}{more}"


def decode_samples(
    samples: Sequence[Sample],
    prep: Preprocess,
    *,
    root: str = "",
    workers: int | None = None,
    min_parallel_bytes: int = PARALLEL_MIN_BYTES,
    name: str = "images",
) -> np.ndarray:
    """Decodes many samples, on all cores when there are enough files to pay for it.

    Args:
        samples: Each a tuple of files with the same length ``T``.
        prep: Target size, fit and channels.
        root: Folder that error messages and logs show paths relative to.
        workers: Processes to use (default: every core).
        min_parallel_bytes: Fewest bytes of files for which a process pool is started.
        name: What is decoded, for the log lines.

    Returns:
        uint8 array shaped ``(N, T, C, H, W)``.

    Raises:
        DatasetError: If files cannot be decoded, once every sample was tried; the message
            names them (the first ``MAX_NAMED_FILES``) and counts them.
    """
    frames = len(samples[0]) if samples else 1
    max_pixels = Limits().max_image_pixels
    out = np.empty((len(samples), frames, prep.num_channels, prep.height, prep.width), np.uint8)
    if not samples:
        return out
    workers = workers or os.cpu_count() or 1
    n_files = len(samples) * frames
    parallel = workers > 1 and _total_bytes(samples, min_parallel_bytes) >= min_parallel_bytes
    chunk_size = max(1, math.ceil(len(samples) / (workers * 8))) if parallel else 256
    chunks = [samples[i : i + chunk_size] for i in range(0, len(samples), chunk_size)]
    started = time.perf_counter()
    logger.info(
        "decoding %s: %s, %s, %s",
        name,
        counted(len(samples), "sample"),
        counted(n_files, "file"),
        counted(workers if parallel else 1, "process", "processes"),
    )
    progress = _Progress(len(samples), name)
    done, refused = 0, []
    if parallel:
        try:
            decode = partial(_decode_chunk, prep=prep, root=root, max_pixels=max_pixels)
            done = _decode_in_pool(chunks, decode, workers, out, refused, progress)
        except BrokenProcessPool:
            logger.warning("a decoder process died; decoding %s in this process", name)
            done, refused = 0, []
    offset = 0
    for chunk in chunks:
        if offset >= done:
            block, problems = _decode_chunk(chunk, prep, root, max_pixels)
            out[offset : offset + len(chunk)] = block
            refused += problems
            progress.update(offset + len(chunk))
        offset += len(chunk)
    if refused:
        raise DatasetError(refused_files(refused))
    elapsed = time.perf_counter() - started
    logger.info("decoded %s: %d samples in %.1f s", name, len(samples), elapsed)
    return out


def _total_bytes(samples: Sequence[Sample], enough: int) -> int:
    """Sums file sizes, stopping once ``enough`` is reached."""
    total = 0
    for sample in samples:
        for path in sample:
            try:
                total += os.stat(path).st_size
            except OSError:
                continue  # decoding names the file
            if total >= enough:
                return total
    return total


def _decode_in_pool(
    chunks: list[Sequence[Sample]],
    decode: Callable[[Sequence[Sample]], tuple[np.ndarray, list[str]]],
    workers: int,
    out: np.ndarray,
    refused: list[str],
    progress: _Progress,
) -> int:
    """Decodes ``chunks`` in a process pool into ``out`` (adding why files were refused
    to ``refused``); returns the samples written."""
    # spawn: the caller may be a multi-threaded worker process, where fork is unsafe.
    context = multiprocessing.get_context("spawn")
    offset = 0
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = pool.map(decode, chunks)
        for block, problems in results:
            out[offset : offset + len(block)] = block
            refused += problems
            offset += len(block)
            progress.update(offset)
    return offset


class _Progress:
    """Logs ``decoded k/N`` at every further tenth."""

    def __init__(self, total: int, name: str) -> None:
        self.total, self.name, self.next_tenth = total, name, 1

    def update(self, done: int) -> None:
        tenth = done * 10 // self.total
        if tenth >= self.next_tenth and done < self.total:
            percent = done * 100 // self.total
            logger.info("decoded %s: %d/%d (%d%%)", self.name, done, self.total, percent)
            self.next_tenth = tenth + 1
