"""The textbook image-folder training loop: torchvision ``ImageFolder`` + ``DataLoader``.

Written the way the PyTorch examples (``mnist``, ``imagenet``) write it: the transforms
decode each PNG with PIL and turn it into a normalized float tensor per sample, in
``num_workers`` loader processes; fp32, eager; on CUDA the loader pins memory, batches
are copied with ``non_blocking=True`` and ``cudnn.benchmark`` is on. Each epoch trains on
the training folder and then evaluates on the validation folder without autograd, as the
examples' ``train()`` / ``test()`` pair does. Nothing in it knows about automl: the model
is given. ``benchmarks/bench_trainer.py`` imports ``run`` and passes automl's model.

Run on its own (the model is automl's ``cnn``, so that it matches the benchmark):

    python benchmarks/peers/imagefolder_loop.py DATA/train DATA/val [--epochs 3]
        [--batch-size 128] [--lr 3e-3] [--workers 2] [--flip] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

TEST_BATCH_SIZE = 1000
"""The examples' ``--test-batch-size`` default."""


@dataclass
class LoopResult:
    """What one run of the loop measured.

    Attributes:
        train_images: Training images seen per epoch.
        epoch_ends: ``time.perf_counter()`` after each epoch (training and evaluation).
        started: ``time.perf_counter()`` before the datasets were built.
        val_loss: Mean validation loss after each epoch.
        val_accuracy: Validation accuracy after each epoch.
    """

    train_images: int
    started: float
    epoch_ends: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


def default_workers() -> int:
    """The imagenet example's ``--workers 4``, capped at the machine's cores."""
    return min(4, os.cpu_count() or 1)


def build_loaders(
    train_dir: str,
    val_dir: str,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    num_workers: int,
    flip: bool,
    use_cuda: bool,
) -> tuple[DataLoader, DataLoader]:
    """``ImageFolder`` datasets with per-sample PIL transforms, and their loaders.

    Args:
        train_dir: Folder with one subfolder of images per class.
        val_dir: The validation folder, same layout.
        mean: Per-channel mean for ``transforms.Normalize``.
        std: Per-channel standard deviation for ``transforms.Normalize``.
        batch_size: Training batch size.
        num_workers: Loader processes per loader.
        flip: Add ``RandomHorizontalFlip()`` to the training transforms.
        use_cuda: Pin memory for the copies to the GPU.

    Returns:
        The training loader (shuffled) and the validation loader.
    """
    normalize = transforms.Normalize(mean=mean, std=std)
    augment = [transforms.RandomHorizontalFlip()] if flip else []
    train_dataset = datasets.ImageFolder(
        train_dir, transforms.Compose([*augment, transforms.ToTensor(), normalize])
    )
    val_dataset = datasets.ImageFolder(
        val_dir, transforms.Compose([transforms.ToTensor(), normalize])
    )
    loader_kwargs = {"num_workers": num_workers, "pin_memory": use_cuda}
    train_loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, **loader_kwargs)
    val_loader = DataLoader(val_dataset, batch_size=TEST_BATCH_SIZE, shuffle=False, **loader_kwargs)
    return train_loader, val_loader


def train(
    model: nn.Module,
    device: torch.device,
    train_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
) -> None:
    """One training epoch, as the examples' ``train()``."""
    model.train()
    for data, target in train_loader:
        data = data.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()


def test(model: nn.Module, device: torch.device, test_loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy on ``test_loader``, as the examples' ``test()``."""
    model.eval()
    test_loss = 0.0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data = data.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            output = model(data)
            test_loss += F.cross_entropy(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    n = len(test_loader.dataset)  # type: ignore[arg-type]
    return test_loss / n, correct / n


def run(
    model: nn.Module,
    train_dir: str,
    val_dir: str,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int,
    batch_size: int,
    lr: float,
    num_workers: int,
    flip: bool,
    device: torch.device,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> LoopResult:
    """Trains ``model`` for ``epochs`` with Adam, evaluating after every epoch.

    Args:
        model: The network (moved to ``device`` here).
        train_dir: Training image folder.
        val_dir: Validation image folder.
        mean: Normalization mean per channel (what the examples hard-code for their data).
        std: Normalization standard deviation per channel.
        epochs: Training epochs.
        batch_size: Training batch size.
        lr: Adam's learning rate.
        num_workers: Loader processes.
        flip: Random horizontal flips in training.
        device: Where the model trains.
        on_epoch: Called with (epoch, validation loss, validation accuracy).

    Returns:
        Timestamps and validation figures of the run.
    """
    started = time.perf_counter()
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.backends.cudnn.benchmark = True
    train_loader, val_loader = build_loaders(
        train_dir, val_dir, mean, std, batch_size, num_workers, flip, use_cuda
    )
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    result = LoopResult(train_images=len(train_loader.dataset), started=started)  # type: ignore[arg-type]
    for epoch in range(1, epochs + 1):
        train(model, device, train_loader, optimizer)
        loss, accuracy = test(model, device, val_loader)
        result.epoch_ends.append(time.perf_counter())
        result.val_loss.append(loss)
        result.val_accuracy.append(accuracy)
        if on_epoch is not None:
            on_epoch(epoch, loss, accuracy)
    return result


def main() -> None:
    """Trains automl's ``cnn`` on an image folder and prints each epoch's figures."""
    from automl.models import build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir")
    parser.add_argument("val_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    classes = len(datasets.ImageFolder(args.train_dir).classes)
    torch.manual_seed(args.seed)
    options = {"width": args.width, "depth": args.depth}
    model = build_model("cnn", options, (3, args.size, args.size), classes)
    result = run(
        model,
        args.train_dir,
        args.val_dir,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        num_workers=args.workers,
        flip=args.flip,
        device=torch.device(args.device),
        on_epoch=lambda e, loss, acc: print(f"epoch {e}: val loss {loss:.4f}, accuracy {acc:.4f}"),
    )
    seconds = result.epoch_ends[-1] - result.started
    print(f"{args.epochs * result.train_images / seconds:.0f} training images/s")


if __name__ == "__main__":
    main()
