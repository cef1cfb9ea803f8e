"""Classifies image files with the model in this folder; automl is not needed.

    python predict.py IMAGE [IMAGE ...]

Needs numpy, Pillow and onnxruntime (or torch instead of onnxruntime: it then runs
model.torchscript.pt). Each image is preprocessed as in training (model_card.json, "input");
one JSON line per image lists its three most probable classes. A file that cannot be read
as an image gets one "error: FILE: REASON" line on stderr instead, and the exit status is 1.
"""

import json
import sys
import warnings
from pathlib import Path

try:
    import numpy as np
    from PIL import Image, ImageOps
except ImportError as missing:
    sys.exit(f"predict.py needs numpy and Pillow ({missing}): pip install numpy pillow")

HERE = Path(__file__).resolve().parent
# Pillow warns on opening an image past its own limit; load() refuses it in one line.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
"""The formats training read, whatever a file's suffix."""
TURNS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE"}
TURNS.update({6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"})
"""How each EXIF orientation other than 1 (as stored) is turned upright."""


def load(path: str, spec: dict, limit: int) -> np.ndarray:
    """One image as the model takes it: float32 (C, H, W)."""
    mode, size = ("L" if spec["channels"] == 1 else "RGB"), (spec["width"], spec["height"])
    if Path(path).exists() and not (Path(path).is_file() or Path(path).is_dir()):
        raise ValueError("not a regular file")  # a FIFO would wait for a writer forever
    with Image.open(path, formats=FORMATS) as opened:
        if opened.width * opened.height > limit or max(opened.size) > 65535:  # never decoded
            over = (
                f"more than {limit}" if opened.width * opened.height > limit else "a side > 65535"
            )
            raise ValueError(f"{opened.width}x{opened.height} pixels: {over}")
        if opened.format == "JPEG":  # a quarter turn is stored with width and height swapped
            turn = orientation(opened)
            opened.draft(mode, size[::-1] if turn >= 5 else size)
        else:
            opened.load()
            turn = orientation(opened)
        image = opened.transpose(getattr(Image.Transpose, TURNS[turn])) if turn > 1 else opened
        if image.mode == "I" or image.mode.startswith("I;16"):  # as training: top 8 of 16 bits
            stored, key = np.asarray(image), image.info.get("transparency")
            values = np.clip(stored, 0, 65535).astype(np.uint16)
            image = Image.fromarray((values >> 8).astype(np.uint8))
            if isinstance(key, int):  # as training: its transparent gray value as an alpha
                alpha = Image.fromarray(np.where(stored == key, 0, 255).astype(np.uint8))
                image = Image.merge("LA", (image, alpha))
        if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")  # as training: transparent pixels show white
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
        image = image.convert(mode)
    if image.size != size and spec["fit"] == "crop":
        image = ImageOps.fit(image, size, method=Image.Resampling.BILINEAR)
    elif image.size != size:
        image = pad(image, size)
    pixels = np.asarray(image, dtype=np.uint8).reshape(size[1], size[0], -1).transpose(2, 0, 1)
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(-1, 1, 1)
    return (pixels.astype(np.float32) / np.float32(spec["scale"]) - mean) / std


def orientation(opened: Image.Image) -> int:
    """The EXIF orientation (1 to 8); 1 without one or where the EXIF is malformed."""
    try:
        value = opened.getexif().get(0x0112, 1)
    except Exception:  # Pillow's EXIF parser raises many kinds on malformed tags
        return 1
    return value if isinstance(value, int) and value in TURNS else 1


def pad(image: Image.Image, size: tuple) -> Image.Image:
    """Fits ``image`` inside ``size`` on black; a very thin image keeps one pixel."""
    width, height = size
    if 2 * image.width * height > image.height and 2 * image.height * width > image.width:
        return ImageOps.pad(image, size, method=Image.Resampling.BILINEAR, color=0)
    inner = (1, height) if image.width < image.height else (width, 1)
    out, at = Image.new(image.mode, size, 0), ((width - inner[0]) // 2, (height - inner[1]) // 2)
    out.paste(image.resize(inner, Image.Resampling.BILINEAR), at)
    return out


def reason(exc: Exception, path: str) -> str:
    """Why a file could not be used, in a few words."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, Image.UnidentifiedImageError):
        empty = Path(path).stat().st_size == 0
        return "the file is empty (0 bytes)" if empty else "not a png, jpeg, webp or bmp image"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def runner() -> object:
    """The model as a function of a batch (N, C, H, W) to logits: model.onnx with
    onnxruntime if both are here, else model.torchscript.pt with torch."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None and (HERE / "model.onnx").exists():
        model = str(HERE / "model.onnx")
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        return lambda batch: session.run(["logits"], {"images": batch})[0]
    try:
        import torch
    except ImportError:
        wanted = "onnxruntime (or torch)" if (HERE / "model.onnx").exists() else "torch"
        sys.exit(f"predict.py needs {wanted} to run the model: pip install {wanted.split()[0]}")
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: not the user's
    model = torch.jit.load(str(HERE / "model.torchscript.pt"), map_location="cpu")
    torch.set_grad_enabled(False)
    return lambda batch: model(torch.from_numpy(batch)).numpy()


def main(paths: list) -> int:
    """Prints the top classes of each image (as the API and `automl predict --json` do);
    returns 1 if a file was not an image."""
    card = json.loads((HERE / "model_card.json").read_text(encoding="utf-8"))
    if card["input"]["frames"]:
        sys.exit("this model classifies clips: give model.onnx float32 (N, T, C, H, W)")
    # Most pixels of an image, from its header (bundles before 2026-12 hold no limit).
    limit, model, failed = card["bundle"].get("max_image_pixels", 40_000_000), None, 0
    for start in range(0, len(paths), 256):  # a few images in memory at a time, not all
        good, arrays = [], []
        for path in paths[start : start + 256]:
            try:
                arrays.append(load(path, card["input"], limit))
                good.append(path)
            except Exception as exc:  # Pillow raises many kinds on bad files
                print(f"error: {path}: {reason(exc, path)}", file=sys.stderr)
                failed += 1
        model = model or (runner() if arrays else None)
        for path, row in zip(good, model(np.stack(arrays)) if arrays else []):  # noqa: B905
            probabilities = np.exp(row - row.max())
            probabilities /= probabilities.sum()
            top = np.argsort(-probabilities, kind="stable")[:3]
            ranked = [
                {"label": card["classes"][i], "index": int(i), "probability": float(p)}
                for i, p in zip(top, probabilities[top])  # noqa: B905
            ]
            print(json.dumps({"file": str(path), "top": ranked}))
        sys.stdout.flush()  # each chunk's lines as soon as they are known
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # help asked: on stdout, status 0
        sys.exit(__doc__ if len(sys.argv) < 2 else print(__doc__))
    sys.exit(main(sys.argv[1:]))
