"""Example data written as files, for the examples in ``search_spaces/`` and benchmarks.

    python -m automl.examples digits-folder data/digits_folder [--imbalanced]
    python -m automl.examples rgb-folder data/shapes32 [--per-class 500] [--size 32]
    python -m automl.examples moving-shapes data/moving_shapes [--clips 40]
    python -m automl.examples pretrained-cnn data/weights/shapes_cnn.safetensors

``digits-folder`` writes scikit-learn's digits as 8x8 grayscale PNGs in ``train/``, ``val/``
and ``test/`` class folders (60/20/20, stratified). With ``--imbalanced``, classes 3, 5
and 8 keep 10% of their training images and the test split is cut to the same count for
every class; validation stays as split. ``rgb-folder`` draws one random-colored shape per
image (ten shape classes) on a noisy background. ``moving-shapes`` writes clips of a
square moving left, right or up (``<class>/<clip>/frame<i>.png``): left and right visit
the same positions in opposite order, so only a model that sees frame order tells them apart.
``pretrained-cnn`` trains the ``cnn`` architecture on another task, the ten shape classes
drawn as 8x8 grayscale images, and saves its weights with safetensors: a checkpoint for the
transfer-learning example (it has never seen a digit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from automl.cli.arguments import whole_number
from automl.data.splits import stratified_split

MINORITY_CLASSES = (3, 5, 8)
MINORITY_SHARE = 0.1
SHAPES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "diamond",
    "ring",
    "hbar",
    "vbar",
    "x",
    "frame",
)
DIRECTIONS = ("left", "right", "up")


def write_digits_folder(dest: Path, imbalanced: bool = False, seed: int = 0) -> dict[str, int]:
    """Writes digits as ``dest/{train,val,test}/<digit>/<index>.png``.

    Returns:
        Images written per split.
    """
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    rest, test = stratified_split(labels, 0.2, seed)
    train_rel, val_rel = stratified_split(labels[rest], 0.25, seed)
    splits = {"train": rest[train_rel], "val": rest[val_rel], "test": test}
    rng = np.random.default_rng(seed)
    if imbalanced:
        splits["train"] = _cut_classes(splits["train"], labels, MINORITY_CLASSES, rng)
        splits["test"] = _balance(splits["test"], labels, rng)
    written = {}
    for split, indices in splits.items():
        for index in indices.tolist():
            folder = dest / split / str(int(labels[index]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(folder / f"{index:04d}.png")
        written[split] = len(indices)
    return written


def _cut_classes(indices, labels, classes: Sequence[int], rng: np.random.Generator):
    keep = []
    for cls in labels[indices].unique().tolist():
        members = indices[labels[indices] == cls].numpy()
        if cls in classes:
            count = max(1, round(len(members) * MINORITY_SHARE))
            members = np.sort(rng.choice(members, count, replace=False))
        keep.extend(members.tolist())
    return np.sort(np.array(keep))


def _balance(indices, labels, rng: np.random.Generator):
    per_class = [indices[labels[indices] == cls].numpy() for cls in labels[indices].unique()]
    smallest = min(len(members) for members in per_class)
    chosen = [rng.choice(members, smallest, replace=False) for members in per_class]
    return np.sort(np.concatenate(chosen))


def write_rgb_folder(
    dest: Path, per_class: int = 500, size: int = 32, classes: int = 10, seed: int = 0
) -> int:
    """Writes ``classes`` shape classes of ``per_class`` RGB PNGs each as ``dest/<shape>/``.

    Returns:
        Images written.
    """
    if not 1 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 1..{len(SHAPES)}")
    rng = np.random.default_rng(seed)
    for shape in SHAPES[:classes]:
        folder = dest / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            _shape_image(shape, size, rng).save(folder / f"{index:05d}.png")
    return per_class * classes


def _shape_image(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(0, 96, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, mode="RGB")
    draw = ImageDraw.Draw(image)
    color = tuple(int(c) for c in rng.integers(128, 256, 3))
    extent = rng.uniform(0.35, 0.6) * size
    cx, cy = rng.uniform(extent / 2, size - extent / 2, 2)
    x0, y0, x1, y1 = cx - extent / 2, cy - extent / 2, cx + extent / 2, cy + extent / 2
    line = max(1, size // 12)
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=color)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "cross":
        draw.rectangle((cx - line, y0, cx + line, y1), fill=color)
        draw.rectangle((x0, cy - line, x1, cy + line), fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=color, width=line)
    elif shape == "hbar":
        draw.rectangle((x0, cy - line, x1, cy + line), fill=color)
    elif shape == "vbar":
        draw.rectangle((cx - line, y0, cx + line, y1), fill=color)
    elif shape == "x":
        draw.line((x0, y0, x1, y1), fill=color, width=line)
        draw.line((x0, y1, x1, y0), fill=color, width=line)
    else:  # frame
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
    return image


def write_moving_shapes(
    dest: Path, clips: int = 40, frames: int = 4, size: int = 16, seed: int = 0
) -> int:
    """Writes ``clips`` clips per direction as ``dest/<left|right|up>/<clip>/frame<i>.png``.

    A white square (a quarter of the frame) moves one step per frame over black. Left
    and right draw their start from the same range and visit the same positions in
    reverse order, so the set of frames says nothing about the direction.

    Returns:
        Clips written.
    """
    rng = np.random.default_rng(seed)
    side = max(2, size // 4)
    step = max(1, (size - side) // (2 * max(frames - 1, 1)))
    travel = step * (frames - 1)
    if travel + side > size:
        raise ValueError(f"{frames} frames do not fit in {size} pixels")
    for direction in DIRECTIONS:
        for clip in range(clips):
            folder = dest / direction / f"clip{clip:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            start = int(rng.integers(0, size - side - travel + 1))
            across = int(rng.integers(0, size - side + 1))
            for i in range(frames):
                offset = {"right": i, "left": frames - 1 - i, "up": frames - 1 - i}[direction]
                along = start + offset * step
                x, y = (across, along) if direction == "up" else (along, across)
                frame = np.zeros((size, size), np.uint8)
                frame[y : y + side, x : x + side] = 255
                Image.fromarray(frame, mode="L").save(folder / f"frame{i}.png")
    return clips * len(DIRECTIONS)


PRETRAINED_CNN = {"width": 32, "depth": 2, "epochs": 8, "lr": 3e-3, "batch_size": 64}
"""The architecture and training of ``pretrained-cnn`` (transfer needs the same width and
depth)."""


def write_pretrained_cnn(dest: Path, seed: int = 0, per_class: int = 300) -> float:
    """Trains ``cnn`` on 8x8 grayscale shapes (a fifth held out) and saves the weights.

    Returns:
        The validation accuracy of the saved weights.
    """
    import torch
    from safetensors.torch import save

    from automl.data import ImageData, channel_stats
    from automl.train import train
    from automl.train.hyperparameters import flat_config

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            drawn = _shape_image(shape, 32, rng).convert("L").resize((8, 8), Image.BILINEAR)
            images.append(np.asarray(drawn))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).unsqueeze(1)
    y = torch.tensor(labels)
    train_idx, val_idx = stratified_split(y, 0.2, seed)
    mean, std = channel_stats(x[train_idx])
    shapes = ImageData(
        x[train_idx], y[train_idx], x[val_idx], y[val_idx], SHAPES, mean, std, f"shapes-{seed}"
    )
    result = train(flat_config({**PRETRAINED_CNN, "seed": seed}), data=shapes)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.contiguous() for key, value in result.state_dict.items()}
    dest.write_bytes(save(tensors))  # an unwritable dest is an OSError, not safetensors' own
    return result.metrics["accuracy"]


SEED = whole_number(0, 2**32 - 1, "seeds")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m automl.examples KIND DEST [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m automl.examples", description=__doc__.split("\n\n")[0].replace("``", "`")
    )
    commands = parser.add_subparsers(dest="kind", required=True)
    digits = commands.add_parser("digits-folder", help="digits as PNG train/val/test folders")
    digits.add_argument("dest", type=Path)
    digits.add_argument("--imbalanced", action="store_true", help="cut classes 3, 5, 8 to 10%%")
    digits.add_argument("--seed", type=SEED, default=0)
    rgb = commands.add_parser("rgb-folder", help="synthetic RGB shapes, one folder per class")
    rgb.add_argument("dest", type=Path)
    rgb.add_argument("--per-class", type=whole_number(1, 100_000, "images per class"), default=500)
    rgb.add_argument("--size", type=whole_number(8, 1024, "sizes"), default=32)
    rgb.add_argument("--classes", type=whole_number(2, len(SHAPES), "class counts"), default=10)
    rgb.add_argument("--seed", type=SEED, default=0)
    moving = commands.add_parser("moving-shapes", help="clips of a square moving left/right/up")
    moving.add_argument("dest", type=Path)
    moving.add_argument(
        "--clips",
        type=whole_number(1, 10_000, "clip counts"),
        default=40,
        help="clips per direction",
    )
    moving.add_argument("--frames", type=whole_number(1, 64, "frame counts"), default=4)
    moving.add_argument("--size", type=whole_number(8, 256, "sizes"), default=16)
    moving.add_argument("--seed", type=SEED, default=0)
    pretrained = commands.add_parser(
        "pretrained-cnn", help="train cnn on 8x8 shapes and save its weights (.safetensors)"
    )
    pretrained.add_argument("dest", type=Path)
    pretrained.add_argument("--seed", type=SEED, default=0)
    args = parser.parse_args(argv)
    try:
        return _write(args)
    except OSError as exc:
        print(f"error: cannot write {args.dest}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _write(args: argparse.Namespace) -> int:
    if args.kind == "pretrained-cnn":
        if args.dest.suffix != ".safetensors" or args.dest.exists():
            print(f"error: {args.dest} must be a new .safetensors file", file=sys.stderr)
            return 2
        accuracy = write_pretrained_cnn(args.dest, args.seed)
        print(f"wrote {args.dest}: cnn on 8x8 shapes, validation accuracy {accuracy:.3f}")
        return 0
    if args.dest.exists() and (not args.dest.is_dir() or any(args.dest.iterdir())):
        print(f"error: {args.dest} exists and is not an empty folder", file=sys.stderr)
        return 2
    try:
        if args.kind == "digits-folder":
            counts = write_digits_folder(args.dest, args.imbalanced, args.seed)
            summary = ", ".join(f"{split} {n}" for split, n in counts.items())
        elif args.kind == "rgb-folder":
            written = write_rgb_folder(
                args.dest, args.per_class, args.size, args.classes, args.seed
            )
            summary = f"{written} images"
        else:
            written = write_moving_shapes(args.dest, args.clips, args.frames, args.size, args.seed)
            summary = f"{written} clips"
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dest}: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
