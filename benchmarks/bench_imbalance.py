"""Imbalance strategies against ``none`` at the same budget, scored on a balanced test split.

The data is digits written as an image folder with classes 3, 5 and 8 cut to 10% of their
training images and a test split with as many images of every class
(``python -m automl.examples digits-folder DEST --imbalanced``). Every strategy trains the
same CNN with the same hyperparameters and epochs; for each of ``--seeds`` seeds the test
split's balanced accuracy and worst-class recall are recorded. Prints mean and standard
deviation per strategy and the difference to ``none``.

    python benchmarks/bench_imbalance.py [--seeds 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from automl.data import forget_loaded, load_dataset
from automl.examples import write_digits_folder
from automl.train import IMBALANCE, train
from automl.train.evaluation import evaluate_weights
from automl.train.hyperparameters import flat_config
from automl.train.imbalance import LocalArtifactCache

STRATEGY_OPTIONS = {"class_weights": {"weighting": "effective_number"}, "gan": {"gan_steps": 400}}


def main() -> None:
    """Runs every strategy for every seed and prints the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_digits_folder(root / "digits_imbalanced", imbalanced=True)
        os.environ["AUTOML_DATA_ROOT"] = str(root)
        os.environ["AUTOML_CACHE_DIR"] = str(root / "cache")
        forget_loaded()
        options = {
            "path": "digits_imbalanced/train",
            "val_path": "digits_imbalanced/val",
            "test_path": "digits_imbalanced/test",
            "size": 8,
            "channels": "grayscale",
        }
        data = load_dataset("image_folder", options)
        counts = torch.bincount(data.train_y, minlength=data.num_classes).tolist()
        print(f"train per class {counts}; test per class {torch.bincount(data.test_y).tolist()}")
        results: dict[str, list[tuple[float, float]]] = {}
        seconds: dict[str, float] = {}
        for strategy in IMBALANCE.names():
            started = time.perf_counter()
            for seed in range(args.seeds):
                values = {
                    "imbalance": strategy,
                    **STRATEGY_OPTIONS.get(strategy, {}),
                    "epochs": args.epochs,
                    "width": 32,
                    "lr": 3e-3,
                    "batch_size": 64,
                    "seed": seed,
                }
                if strategy == "gan":  # a generator per seed, as each seed had before
                    values["gan_seed"] = seed
                config = flat_config(values, {"source": "image_folder", "options": options})
                result = train(config, data=data, artifacts=LocalArtifactCache(root / "artifacts"))
                test = evaluate_weights(config, result.state_dict, data=data).metrics
                results.setdefault(strategy, []).append(
                    (test["balanced_accuracy"], test["worst_class_recall"])
                )
            seconds[strategy] = (time.perf_counter() - started) / args.seeds
        print_table(results, seconds)


def print_table(results: dict[str, list[tuple[float, float]]], seconds: dict[str, float]) -> None:
    """Mean +- standard deviation per strategy, and the gain over ``none``."""

    def stats(values: list[float]) -> tuple[float, float]:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), spread

    base_bal = stats([r[0] for r in results["none"]])[0]
    base_worst = stats([r[1] for r in results["none"]])[0]
    print(
        f"{'strategy':14} {'balanced acc (test)':>22} {'vs none':>8} "
        f"{'worst-class recall':>20} {'vs none':>8} {'s/run':>6}"
    )
    for strategy, rows in results.items():
        bal, bal_sd = stats([r[0] for r in rows])
        worst, worst_sd = stats([r[1] for r in rows])
        gains = f"{bal - base_bal:>+8.4f} {worst:>11.4f} +- {worst_sd:.4f}"
        print(
            f"{strategy:14} {bal:>13.4f} +- {bal_sd:.4f} {gains} "
            f"{worst - base_worst:>+8.4f} {seconds[strategy]:>6.1f}"
        )


if __name__ == "__main__":
    main()
