"""Side-by-side: training images/s of automl's trainer against the textbook ImageFolder loop.

Both sides train the same model (automl's ``cnn``, width 8 and depth 2 unless
``--width`` / ``--depth`` say otherwise, built by automl's model builder after
``torch.manual_seed(seed)``, so the initial weights are identical) with Adam, the same
learning rate, batch size and number of epochs, evaluating on the same validation folder
after every epoch, on a generated folder of 32x32 RGB PNGs (``automl.examples``'
``write_rgb_folder``: ``train/`` with ``--per-class`` images of each of 10 classes,
``val/`` with ``--val-per-class``; deterministic for the seeds):

- ``automl``: a trial's ``TrialConfig`` (validated, as the worker builds it) and
  ``automl.train.train`` on the ``image_folder`` source (``path: train``,
  ``val_path: val``) with the decode cache already filled, as every trial after the first
  on this data finds it; the process's in-memory copy is dropped first, so every run
  reads the cache file (the first trial of each worker process). Data resident as uint8
  tensors, index-slice batches, the batched ``hflip`` augmentation, channels_last; on
  CUDA also bf16 autocast, fused Adam and updates replayed from a CUDA graph.
- ``textbook``: ``benchmarks/peers/imagefolder_loop.py``: ``ImageFolder`` +
  ``DataLoader(num_workers=--workers)``, PIL decode and ``RandomHorizontalFlip`` +
  ``ToTensor`` + ``Normalize`` per sample in every epoch, fp32, eager (pinned memory and
  ``cudnn.benchmark`` on CUDA). ``Normalize`` gets the training split's mean and standard
  deviation, as automl computes them (a user hard-codes such constants).
- ``automl eager`` (with ``--eager``, CUDA only): automl with ``AUTOML_CUDA_GRAPHS=0``, its
  updates launched eagerly instead of replayed from a CUDA graph. Not in the ratio.
- ``automl cold`` (with ``--cold``): automl with an empty decode cache (the first trial on
  new data): decoding every PNG and writing the cache is included. Not in the ratio.

``--no-flip`` drops the flip on both sides; ``--precision bf16`` trains automl's side with
bf16 autocast on the CPU too (the trial's ``precision``; the textbook loop stays fp32).
Images/s = epochs x training images / wall time of the whole run (building the datasets or
loading the cache, model set-up, every epoch's training and validation); ``epoch img/s`` =
training images / the median time of epochs 2 and later (steady state, validation
included). The sides alternate, in rotated order, ``--repeats`` times after one untimed
1-epoch run of each; medians are printed with the ratio automl / textbook (above 1: automl
faster). The issue's goals: >= 2x on the CPU, >= 10x on one H100 for small conv nets.

``--profile`` then runs the automl side once more under cProfile and prints where its
time goes (cumulative, automl functions and the heaviest callees).

    python benchmarks/bench_trainer.py [--per-class 1000] [--val-per-class 200] [--epochs 3]
        [--batch-size 128] [--width 8] [--depth 2] [--repeats 3] [--workers 2]
        [--device cpu [cuda]] [--data DIR] [--cold] [--eager] [--no-flip]
        [--precision auto|fp32|bf16] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peers import imagefolder_loop

from automl.data import forget_loaded, load_dataset
from automl.examples import write_rgb_folder
from automl.models import build_model
from automl.train import TrialConfig, train
from automl.train.graphs import GRAPHS_ENV
from automl.train.hyperparameters import flat_config
from automl.train.loop import resolve_device

SIZE = 32
CLASSES = 10
GOALS = {"cpu": 2.0, "cuda": 10.0}
"""The issue's goals for the ratio automl / textbook (CUDA: one H100, small conv nets)."""


@dataclass
class Run:
    """One timed training run of one side.

    Attributes:
        started: ``time.perf_counter()`` before anything of the run.
        epoch_ends: ``time.perf_counter()`` after each epoch's validation.
        ended: ``time.perf_counter()`` when the run returned.
        train_images: Training images per epoch.
        accuracy: Final validation accuracy.
        cpu_s: CPU seconds of this process and its waited-for children (loader workers).
    """

    started: float
    epoch_ends: list[float]
    ended: float
    train_images: int
    accuracy: float
    cpu_s: float = float("nan")
    graph: str = ""
    """automl on CUDA: whether its updates replayed from a CUDA graph (``notes``)."""

    @property
    def images_per_s(self) -> float:
        """Training images per second over the whole run."""
        return len(self.epoch_ends) * self.train_images / (self.ended - self.started)

    @property
    def images_per_cpu_s(self) -> float:
        """Training images per CPU second (robust to other jobs sharing the cores)."""
        return len(self.epoch_ends) * self.train_images / self.cpu_s

    @property
    def first_epoch_s(self) -> float:
        """Seconds from the start to the end of the first epoch (set-up and loading included)."""
        return self.epoch_ends[0] - self.started

    @property
    def epoch_images_per_s(self) -> float:
        """Training images per second of the later epochs (NaN with one epoch)."""
        later = [b - a for a, b in itertools.pairwise(self.epoch_ends)]
        return self.train_images / statistics.median(later) if later else float("nan")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its terminated, waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_data(root: Path, per_class: int, val_per_class: int) -> None:
    """Writes ``root/train`` and ``root/val`` once; reuses them when already written.

    Args:
        root: The data root.
        per_class: Training images per class.
        val_per_class: Validation images per class.
    """
    marker = root / "bench_trainer.json"
    wanted = {"per_class": per_class, "val_per_class": val_per_class, "size": SIZE, "seeds": [0, 1]}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    for split in ("train", "val"):
        shutil.rmtree(root / split, ignore_errors=True)
    started = time.perf_counter()
    write_rgb_folder(root / "train", per_class=per_class, size=SIZE, classes=CLASSES, seed=0)
    write_rgb_folder(root / "val", per_class=val_per_class, size=SIZE, classes=CLASSES, seed=1)
    marker.write_text(json.dumps(wanted))
    count = (per_class + val_per_class) * CLASSES
    print(f"wrote {count} PNGs under {root} in {time.perf_counter() - started:.1f} s", flush=True)


def trial_config(args: argparse.Namespace, epochs: int) -> TrialConfig:
    """automl's configuration of the run (``hflip`` with p = 0.5 unless ``--no-flip``)."""
    values: dict[str, object] = {
        "model": "cnn",
        "width": args.width,
        "depth": args.depth,
        "optimizer": "adam",
        "lr": args.lr,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "seed": 0,
        "precision": args.precision,
        "restore_best": False,  # the last epoch's accuracy, as the textbook loop reports
    }
    if not args.no_flip:
        values["hflip.p"] = 0.5
    options = {"path": "train", "val_path": "val", "size": SIZE}
    return flat_config(values, {"source": "image_folder", "options": options})


def run_automl(
    args: argparse.Namespace,
    device: torch.device,
    cache: Path,
    cold: bool,
    epochs: int,
    graphs: bool = True,
) -> Run:
    """One automl trial's training: its ``TrialConfig`` (validated as a worker validates it)
    and ``automl.train.train``, which reads the dataset from the disk cache (or decodes it).
    ``graphs=False`` sets ``AUTOML_CUDA_GRAPHS=0`` for the run (eager updates on CUDA)."""
    forget_loaded()
    previous = os.environ.get(GRAPHS_ENV)
    if not graphs:
        os.environ[GRAPHS_ENV] = "0"
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    marks: list[float] = []
    cpu = cpu_seconds()
    started = time.perf_counter()
    cfg = trial_config(args, epochs)
    try:
        result = train(
            cfg, lambda epoch, metrics: marks.append(time.perf_counter()) or False, device=device
        )
    finally:
        if previous is None:
            os.environ.pop(GRAPHS_ENV, None)
        else:
            os.environ[GRAPHS_ENV] = previous
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ended = time.perf_counter()
    run = Run(started, marks, ended, args.per_class * CLASSES, result.metrics["accuracy"])
    run.cpu_s = cpu_seconds() - cpu
    run.graph = result.notes.get("cuda_graph", "")
    return run


def run_textbook(
    cfg: TrialConfig,
    device: torch.device,
    root: Path,
    stats: tuple[list[float], list[float]],
    args: argparse.Namespace,
) -> Run:
    """One run of the peer loop with the same model, optimizer, batch size and epochs."""
    cpu = cpu_seconds()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.options, (3, SIZE, SIZE), CLASSES)
    result = imagefolder_loop.run(
        model,
        str(root / "train"),
        str(root / "val"),
        mean=stats[0],
        std=stats[1],
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        num_workers=args.workers,
        flip=not args.no_flip,
        device=device,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ended = time.perf_counter()
    run = Run(
        result.started, result.epoch_ends, ended, result.train_images, result.val_accuracy[-1]
    )
    run.cpu_s = cpu_seconds() - cpu
    return run


def measure(
    args: argparse.Namespace, device: torch.device, root: Path, cache: Path
) -> dict[str, list[Run]]:
    """Warm-up, then ``--repeats`` rounds of every side in rotated order."""
    run_automl(args, device, cache, cold=False, epochs=1)  # fills the decode cache
    warm = trial_config(args, 1)
    data = load_dataset(warm.dataset.source, warm.dataset.options)
    stats = (data.mean.tolist(), data.std.tolist())
    run_textbook(warm, device, root, stats, args)

    cfg = trial_config(args, args.epochs)
    sides: dict[str, Callable[[], Run]] = {
        "automl": lambda: run_automl(args, device, cache, cold=False, epochs=args.epochs),
        "textbook": lambda: run_textbook(cfg, device, root, stats, args),
    }
    if args.eager and device.type == "cuda":
        sides["automl eager"] = lambda: run_automl(
            args, device, cache, cold=False, epochs=args.epochs, graphs=False
        )
    if args.cold:
        sides["automl cold"] = lambda: run_automl(
            args, device, cache, cold=True, epochs=args.epochs
        )
    names = list(sides)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            run = sides[name]()
            runs[name].append(run)
            print(
                f"  {device.type} repeat {repeat + 1} {name:<11} {run.images_per_s:8.0f} img/s "
                f"(epochs {run.epoch_images_per_s:8.0f} img/s, "
                f"1st epoch {run.first_epoch_s:5.2f} s, {run.images_per_cpu_s:5.0f} img/cpu-s, "
                f"acc {run.accuracy:.3f}, "
                f"load average {os.getloadavg()[0]:.1f})"
                + (f" cuda graph: {run.graph}" if run.graph else ""),
                flush=True,
            )
    return runs


def report(device: torch.device, runs: dict[str, list[Run]], repeats: int) -> float:
    """Prints the medians and the ratio; returns automl / textbook images/s."""
    print(f"\n{device.type}: medians of {repeats} runs")
    print(
        f"{'side':<12} {'images/s':>9} {'epoch img/s':>12} {'run s':>7} {'1st epoch s':>12} "
        f"{'img/cpu-s':>10} {'val acc':>8}"
    )
    medians = {}
    for name, rows in runs.items():
        rate = statistics.median(r.images_per_s for r in rows)
        epoch_rate = statistics.median(r.epoch_images_per_s for r in rows)
        seconds = statistics.median(r.ended - r.started for r in rows)
        first = statistics.median(r.first_epoch_s for r in rows)
        per_cpu = statistics.median(r.images_per_cpu_s for r in rows)
        accuracy = statistics.median(r.accuracy for r in rows)
        medians[name] = (rate, epoch_rate, per_cpu)
        print(
            f"{name:<12} {rate:>9.0f} {epoch_rate:>12.0f} {seconds:>7.2f} {first:>12.2f} "
            f"{per_cpu:>10.0f} {accuracy:>8.3f}"
        )
    ours, theirs = medians["automl"], medians["textbook"]
    ratio = ours[0] / theirs[0]
    goal = GOALS[device.type]
    print(
        f"ratio automl / textbook: images/s {ratio:.2f}x, later epochs "
        f"{ours[1] / theirs[1]:.2f}x, per CPU second {ours[2] / theirs[2]:.2f}x (goal >= {goal:g}x"
        f"{' on one H100' if device.type == 'cuda' else ''}: "
        f"{'met' if ratio >= goal else 'NOT met'})"
    )
    return ratio


def profile_automl(args: argparse.Namespace, device: torch.device, cache: Path) -> None:
    """Runs the automl side once under cProfile and prints where the time goes."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    run_automl(args, device, cache, cold=False, epochs=args.epochs)
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cumulative, own, calls, f"{Path(path).name}:{line}({name})", path))
    print(f"\nprofile of one automl run on {device.type}: {total:.2f} s wall")
    print(f"{'cumulative':>10} {'%':>6} {'own s':>7} {'calls':>8}  automl function")
    automl_rows = [r for r in rows if f"{os.sep}automl{os.sep}" in r[4]]
    for cumulative, own, calls, label, _ in sorted(automl_rows, reverse=True)[:20]:
        print(
            f"{cumulative:>10.3f} {100 * cumulative / total:>5.1f}% {own:>7.3f} {calls:>8}  {label}"
        )
    print(f"\n{'own s':>10} {'%':>6} {'calls':>8}  heaviest functions by own time")
    for _, own, calls, label, _ in sorted(rows, key=lambda r: -r[1])[:15]:
        print(f"{own:>10.3f} {100 * own / total:>5.1f}% {calls:>8}  {label}")


def main() -> None:
    """Generates the data, measures every device and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000, help="training PNGs per class")
    parser.add_argument("--val-per-class", type=int, default=200, help="validation PNGs per class")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=8, help="cnn width (automl's default: 32)")
    parser.add_argument("--depth", type=int, default=2, help="cnn depth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        default=imagefolder_loop.default_workers(),
        help="DataLoader processes of the textbook loop (default: min(4, cores))",
    )
    parser.add_argument("--device", nargs="+", default=["cpu"], help="cpu and/or cuda[:N]")
    parser.add_argument("--data", type=Path, help="keep the generated images here (reused)")
    parser.add_argument("--cold", action="store_true", help="also time automl with no cache")
    parser.add_argument(
        "--eager", action="store_true", help="on CUDA, also time automl without CUDA graphs"
    )
    parser.add_argument("--no-flip", action="store_true", help="no augmentation on either side")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="automl's precision (auto: fp32 on the CPU, bf16 or fp16 on CUDA)",
    )
    parser.add_argument("--profile", action="store_true", help="profile one automl run")
    parser.add_argument(
        "--threads", type=int, help="torch threads of this process, both sides (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [resolve_device(name) for name in args.device]

    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        root = args.data.resolve() if args.data else Path(tmp) / "data"
        cache = Path(tmp) / "cache"
        os.environ["AUTOML_DATA_ROOT"], os.environ["AUTOML_CACHE_DIR"] = str(root), str(cache)
        make_data(root, args.per_class, args.val_per_class)
        print(
            f"{args.per_class * CLASSES} training + {args.val_per_class * CLASSES} validation "
            f"PNGs {SIZE}x{SIZE} RGB; cnn width {args.width} depth {args.depth}; "
            f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}, "
            f"flip {'off' if args.no_flip else 'on'}; automl precision {args.precision}; "
            f"textbook num_workers {args.workers}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        ratios = {}
        for device in devices:
            if device.type == "cuda":
                print(f"cuda device: {torch.cuda.get_device_name(device)}", flush=True)
            ratios[str(device)] = report(device, measure(args, device, root, cache), args.repeats)
            if args.profile:
                profile_automl(args, device, cache)
    print("\n" + ", ".join(f"{name}: {ratio:.2f}x" for name, ratio in ratios.items()))


if __name__ == "__main__":
    main()
