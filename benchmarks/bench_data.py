"""Side-by-side: first-epoch and later-epoch time on a 32x32 RGB image folder, in one run.

Three ways to train the same CNN for a few epochs on a generated folder of PNGs
(``python -m automl.examples rgb-folder``):

1. ``cache warm``: automl with the decode cache already filled (every trial after the
   first one on the data, in any worker): load = read one uint8 tensor file.
2. ``cache cold``: automl with an empty cache (the first trial; without a cache, every
   trial): load = decode every PNG, then write the cache.
3. ``dataloader``: the textbook torchvision ``ImageFolder`` + ``DataLoader`` (2 loader
   processes) that decodes every image in every epoch.

Loading = ``load_dataset`` (or building the ImageFolder); first epoch = loading + the first
training epoch (with validation); later epoch = the mean of the others. The baseline does
not normalize (ToTensor only), so its accuracy differs; only times are compared. Prints
the medians over repeats, alternating the sides, and ratios.

    python benchmarks/bench_data.py [--per-class 500] [--epochs 3] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from automl.data import forget_loaded, load_dataset, stratified_split
from automl.examples import write_rgb_folder
from automl.models import build_model
from automl.train import TrialConfig, train
from automl.train.hyperparameters import flat_config
from automl.train.loop import resolve_device

SIZE = 32


def config(epochs: int) -> TrialConfig:
    options = {"path": "shapes", "size": SIZE, "val_fraction": 0.2}
    values = {"width": 8, "depth": 2, "epochs": epochs, "batch_size": 128, "lr": 3e-3}
    return flat_config(values, {"source": "image_folder", "options": options})


def run_automl(
    cfg: TrialConfig, device: torch.device, cold: bool, cache: Path
) -> tuple[float, float, float, float]:
    """Returns (loading, first epoch incl. loading, mean later epoch, accuracy)."""
    forget_loaded()
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    data = load_dataset(cfg.dataset.source, cfg.dataset.options)
    loaded = time.perf_counter() - started
    marks: list[float] = []
    result = train(
        cfg,
        lambda epoch, metrics: marks.append(time.perf_counter()) or False,
        device=device,
        data=data,
    )
    first = marks[0] - started
    later = statistics.mean(b - a for a, b in itertools.pairwise(marks))
    return loaded, first, later, result.metrics["accuracy"]


def run_dataloader(
    cfg: TrialConfig, device: torch.device, root: Path
) -> tuple[float, float, float]:
    """The same training with per-epoch decoding through a DataLoader."""
    started = time.perf_counter()
    stats = transforms.Compose(
        [transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor()]
    )
    folder = datasets.ImageFolder(str(root / "shapes"), transform=stats)
    loaded = time.perf_counter() - started
    train_idx, val_idx = stratified_split(torch.tensor(folder.targets), 0.2, 0)
    loader_args = {"batch_size": cfg.batch_size, "num_workers": 2, "persistent_workers": False}
    train_loader = DataLoader(
        Subset(folder, train_idx.tolist()), shuffle=True, drop_last=False, **loader_args
    )
    val_loader = DataLoader(Subset(folder, val_idx.tolist()), **loader_args)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.options, (3, SIZE, SIZE), len(folder.classes)).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    marks, accuracy = [], 0.0
    for _ in range(cfg.epochs):
        model.train()
        for images, labels in train_loader:
            loss = torch.nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
        accuracy = correct / len(val_idx)
        marks.append(time.perf_counter())
    first = marks[0] - started
    later = statistics.mean(b - a for a, b in itertools.pairwise(marks))
    return loaded, first, later, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=500, help="images per class (10 classes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        os.environ["AUTOML_DATA_ROOT"], os.environ["AUTOML_CACHE_DIR"] = str(root), str(cache)
        write_rgb_folder(root / "shapes", per_class=args.per_class, size=SIZE)
        cfg = config(args.epochs)
        sides = {
            "cache warm": lambda: run_automl(cfg, device, cold=False, cache=cache),
            "cache cold": lambda: run_automl(cfg, device, cold=True, cache=cache),
            "dataloader": lambda: run_dataloader(cfg, device, root),
        }
        sides["cache warm"]()  # fills the cache; the warm side must start from a full one
        results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name in ("cache cold", "cache warm", "dataloader"):
                results[name].append(sides[name]())
    n = args.per_class * 10
    print(
        f"{n} PNGs {SIZE}x{SIZE} RGB, {args.epochs} epochs, device {device}, "
        f"{args.repeats} repeats (medians)"
    )
    print(f"{'side':<12} {'loading':>9} {'first epoch':>12} {'later epoch':>12} {'val acc':>8}")
    medians = {}
    for name, rows in results.items():
        load, first, later, acc = (statistics.median(column) for column in zip(*rows, strict=True))
        medians[name] = (first, later, load)
        print(f"{name:<12} {load:>7.2f} s {first:>10.2f} s {later:>10.2f} s {acc:>8.3f}")
    warm, cold, loader = medians["cache warm"], medians["cache cold"], medians["dataloader"]
    print(
        f"first epoch: cold / warm = {cold[0] / warm[0]:.2f}x, "
        f"dataloader / warm = {loader[0] / warm[0]:.2f}x"
    )
    print(f"later epoch: dataloader / automl = {loader[1] / warm[1]:.2f}x")
    print(f"loading: cold / warm = {cold[2] / warm[2]:.1f}x")


if __name__ == "__main__":
    main()
