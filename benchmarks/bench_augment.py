"""Side-by-side: automl's batched per-sample augmentations versus torchvision per image.

``torchvision.transforms.v2`` draws one set of random parameters per call, so the usual
way to give every image its own parameters is a Python loop over the batch (what a
``Dataset.__getitem__`` does). automl draws per-sample parameters as tensors and applies
each augmentation once per batch. Both sides get the same batch of float images on the
same device, with ``p = 1`` and matching strengths.

Prints milliseconds per batch and ratios (torchvision loop / automl: above 1 means automl
is faster). Timings alternate between the two sides and take the median.

    python benchmarks/bench_augment.py [--batch 512] [--size 32] [--repeats 5]
        [--device cpu] [--threads 0]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from automl.train.augment import AUGMENTATIONS
from automl.train.loop import resolve_device

CASES: dict[str, tuple[dict[str, object], Callable[[int], v2.Transform]]] = {
    "pad_crop": ({"pad": 4}, lambda s: v2.RandomCrop(s, padding=4, padding_mode="reflect")),
    "resized_crop": ({}, lambda s: v2.RandomResizedCrop(s, scale=(0.35, 1.0))),
    "affine": ({}, lambda s: v2.RandomAffine(degrees=15, translate=(0.1, 0.1))),
    "color_jitter": ({"hue": 0.1}, lambda s: v2.ColorJitter(0.4, 0.4, 0.4, 0.1)),
    "randaugment": ({}, lambda s: v2.RandAugment(num_ops=2, magnitude=9)),
    "trivialaugment": ({}, lambda s: v2.TrivialAugmentWide()),
    "erasing": ({}, lambda s: v2.RandomErasing(p=1.0)),
}


def per_image(transform: v2.Transform, images: torch.Tensor) -> torch.Tensor:
    """The usual per-sample randomness: one transform call per image."""
    return torch.stack([transform(image) for image in images])


def timed(run: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images = torch.rand(args.batch, 3, args.size, args.size, device=device)
    targets = torch.zeros(args.batch, dtype=torch.int64, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    print(f"batch {args.batch} x 3x{args.size}x{args.size} on {device}, {args.repeats} repeats")
    print(f"{'augmentation':<16}{'automl ms':>12}{'torchvision ms':>16}{'ratio':>9}")
    for name, (options, make_transform) in CASES.items():
        entry = AUGMENTATIONS.get(name)
        ours = entry.factory(entry.parse_options({"p": 1.0, **options}), 10)
        theirs = make_transform(args.size)

        run_ours = functools.partial(ours, images, targets, generator)
        run_theirs = functools.partial(per_image, theirs, images)
        run_ours(), run_theirs()  # warm-up
        ours_s, theirs_s = [], []
        for _ in range(args.repeats):
            ours_s.append(timed(run_ours, device))
            theirs_s.append(timed(run_theirs, device))
        a, b = statistics.median(ours_s) * 1000, statistics.median(theirs_s) * 1000
        print(f"{name:<16}{a:>12.1f}{b:>16.1f}{b / a:>8.1f}x")


if __name__ == "__main__":
    main()
