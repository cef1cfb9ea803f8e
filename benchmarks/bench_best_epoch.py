"""Side-by-side: test accuracy of the model a trial keeps, with ``restore_best`` on and off.

Random configurations (Adam or SGD with momentum, log-uniform learning rate, width,
dropout) of automl's ``cnn`` on scikit-learn's digits with a held-out test split, each
trained twice with the same seed: once keeping its last epoch (``restore_best: false``),
once its best validation epoch (the default). Both runs train identically (the choice
draws no randomness), so the difference is only which epoch's weights are kept. Prints
each pair and the mean test-accuracy gain, with how many configurations the best epoch
helped or hurt.

    python benchmarks/bench_best_epoch.py [--configs 16] [--epochs 12] [--patience 3]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from automl.data import load_dataset
from automl.train import train
from automl.train.evaluation import evaluate_weights
from automl.train.hyperparameters import flat_config

DATASET = {"source": "digits", "options": {"test_fraction": 0.2}}


def random_values(rng: random.Random, index: int, epochs: int, patience: int) -> dict[str, object]:
    """One random configuration (its seed is its index)."""
    return {
        "epochs": epochs,
        "patience": patience,
        "width": rng.choice([8, 16]),
        "depth": 2,
        "batch_size": 64,
        "optimizer": rng.choice(["adam", "sgd"]),
        "lr": math.exp(rng.uniform(math.log(1e-3), math.log(5e-2))),
        "dropout": rng.uniform(0.0, 0.5),
        "seed": index,
    }


def main() -> None:
    """Trains each configuration both ways and prints the test accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3, help="0: no early stopping")
    parser.add_argument("--seed", type=int, default=0, help="seed of the configurations")
    args = parser.parse_args()

    data = load_dataset(DATASET["source"], DATASET["options"])
    rng = random.Random(args.seed)
    gains: list[float] = []
    earlier = 0
    for index in range(args.configs):
        values = random_values(rng, index, args.epochs, args.patience)
        scores = []
        for restore in (False, True):
            config = flat_config({**values, "restore_best": restore}, DATASET)
            result = train(config, data=data)
            test = evaluate_weights(config, result.state_dict, data=data).metrics["accuracy"]
            scores.append((test, result.best_epoch, len(result.history)))
        (last, _, ran), (best, kept, _) = scores
        gains.append(best - last)
        earlier += kept != ran
        print(
            f"{values['optimizer']:4} lr {values['lr']:.4f} width {values['width']:2}: "
            f"ran {ran:2} epochs, kept {kept:2}; test last {last:.4f}, best epoch {best:.4f}",
            flush=True,
        )
    print(
        f"best epoch before the last in {earlier} of {len(gains)}; "
        f"mean test gain {statistics.mean(gains):+.4f} (min {min(gains):+.4f}, "
        f"max {max(gains):+.4f}); better {sum(g > 0 for g in gains)}, "
        f"worse {sum(g < 0 for g in gains)}"
    )


if __name__ == "__main__":
    main()
