"""Side-by-side: what a trial scores with ``precise_bn`` on (the default) and off.

Random configurations (Adam or SGD with momentum, log-uniform learning rate, width,
dropout) of automl's ``cnn``, each trained twice with the same seed: once evaluating with
batch norm's running averages (``precise_bn: 0``), once with statistics recomputed under
the current weights before every validation (the default). Training is identical (the
weights come out bit for bit the same), so the differences are only in what is scored:

- test accuracy of the final model (``restore_best: false`` on both sides, so the same
  epoch is kept);
- how well a trial's first-epoch validation accuracy (what a pruner compares first)
  ranks the configurations by their final test accuracy (Spearman's rho over the
  configurations);
- seconds per run (the recomputation costs one forward pass over ``precise_bn`` images
  per epoch).

Data: ``shapes`` is ``bench_search.py``'s generated folder of 32x32 RGB PNGs, written
under ``--root`` (3 epochs at batch 128: 36 steps, the search benchmark's trials);
``digits`` is scikit-learn's digits with a 20% test split (``--epochs`` at batch 64).

    python benchmarks/bench_precise_bn.py [--data shapes|digits] [--configs 16]
        [--epochs 3] [--seed 0] [--model cnn] [--root /tmp/automl-bench-search]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from automl.data import ImageData, load_dataset
from automl.train import train
from automl.train.evaluation import evaluate_weights
from automl.train.hyperparameters import flat_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_search

DIGITS = {"source": "digits", "options": {"test_fraction": 0.2}}


def dataset_of(name: str, root: Path) -> dict[str, Any]:
    """The dataset config of ``name``; the shapes folder is written once under ``root``,
    which becomes the data root its relative paths resolve against."""
    if name == "digits":
        return DIGITS
    bench_search.make_data(root, 150, 50, 100)
    os.environ["AUTOML_DATA_ROOT"] = str(root)
    return bench_search.DATASET


def random_values(
    rng: random.Random, index: int, epochs: int, batch: int, model: str = "cnn"
) -> dict[str, Any]:
    """One configuration of ``bench_search.py``'s space (its seed is its index); another
    ``model`` than ``cnn`` keeps its own architecture options and draws the same optimizer,
    learning rate and seed."""
    low, high = bench_search.peer.LR_RANGE
    shape = {
        "width": rng.choice([8, 16, 24, 32]),
        "depth": 2,
        "dropout": rng.uniform(*bench_search.peer.DROPOUT_RANGE),
    }
    values = {
        "model": model,
        "epochs": epochs,
        "restore_best": False,
        "batch_size": batch,
        "optimizer": rng.choice(["adam", "sgd"]),
        "lr": math.exp(rng.uniform(math.log(low), math.log(high))),
        "seed": index,
    }
    return {**values, **shape} if model == "cnn" else values


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN when either side is
    constant."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        start = 0
        while start < len(order):
            stop = start
            while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
                stop += 1
            for position in range(start, stop + 1):
                result[order[position]] = (start + stop) / 2
            start = stop + 1
        return result

    try:
        return statistics.correlation(ranks(xs), ranks(ys))
    except statistics.StatisticsError:  # one side constant (e.g. every run at chance)
        return math.nan


def run(values: dict[str, Any], dataset: dict[str, Any], data: ImageData) -> tuple[float, ...]:
    """Test accuracy, first-epoch validation accuracy and seconds of one training run."""
    config = flat_config(values, dataset)
    result = train(config, data=data)
    test = evaluate_weights(config, result.state_dict, data=data).metrics["accuracy"]
    return test, result.history[0]["accuracy"], result.duration_s


def main() -> None:
    """Trains each configuration both ways and prints the scores side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["shapes", "digits"], default="shapes")
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the configurations")
    parser.add_argument("--model", default="cnn", help="architecture (cnn: the searched shape)")
    parser.add_argument("--root", type=Path, default=Path("/tmp/automl-bench-search"))
    args = parser.parse_args()

    dataset = dataset_of(args.data, args.root)
    data = load_dataset(dataset["source"], dataset["options"])
    batch = bench_search.peer.BATCH_SIZE if args.data == "shapes" else 64
    rng = random.Random(args.seed)
    sides: dict[str, list[tuple[float, ...]]] = {"running": [], "precise": []}
    for index in range(args.configs):
        values = random_values(rng, index, args.epochs, batch, args.model)
        lagging = run({**values, "precise_bn": 0}, dataset, data)
        precise = run(values, dataset, data)
        sides["running"].append(lagging)
        sides["precise"].append(precise)
        shape = ""
        if "width" in values:
            shape = f"width {values['width']:2} dropout {values['dropout']:.2f}"
        print(
            f"{values['model']} {values['optimizer']:4} lr {values['lr']:.4f} {shape}: "
            f"test {lagging[0]:.4f} -> {precise[0]:.4f}, "
            f"epoch-1 val {lagging[1]:.4f} -> {precise[1]:.4f}",
            flush=True,
        )
    gains = [p[0] - r[0] for r, p in zip(sides["running"], sides["precise"], strict=True)]
    for name, rows in sides.items():
        tests, firsts, seconds = (list(column) for column in zip(*rows, strict=True))
        print(
            f"{name:8}: mean test {statistics.mean(tests):.4f}, best {max(tests):.4f}; "
            f"epoch-1 val ranks final test with rho {spearman(firsts, tests):+.3f}; "
            f"median {statistics.median(seconds):.2f} s per run"
        )
    ratio = statistics.median(
        p[2] / r[2] for r, p in zip(sides["running"], sides["precise"], strict=True)
    )
    print(
        f"mean test gain {statistics.mean(gains):+.4f} (min {min(gains):+.4f}, "
        f"max {max(gains):+.4f}); better {sum(g > 0 for g in gains)}, "
        f"worse {sum(g < 0 for g in gains)}; seconds per run precise / running {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
