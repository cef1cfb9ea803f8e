"""Side-by-side: automl versus a plain Optuna + DataLoader baseline, in one run.

Two comparisons on the digits data, same CNN, same hyperparameters, same epochs:

1. ``train``: one training run with automl's trainer (tensors resident on the device,
   index-slice batches) against the usual ``DataLoader(TensorDataset)`` loop.
2. ``study``: a whole N-trial study: ``automl run`` machinery (SQLite store, queued trials,
   worker loop, metrics and weights saved) against ``optuna.create_study().optimize`` in
   memory with the DataLoader objective.

Prints seconds and ratios (baseline / automl: above 1 means automl is faster). Timings
alternate between the two sides and take the median, since the machine is shared.

    python benchmarks/bench_trials.py [--repeats 5] [--trials 8] [--epochs 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from torch.utils.data import DataLoader, TensorDataset

from automl.data import load_dataset
from automl.models import build_model
from automl.spec import validate_spec
from automl.store import get_study, open_store, submit_study
from automl.train import TrialConfig, train
from automl.train.hyperparameters import flat_config
from automl.train.loop import resolve_device
from automl.worker import Worker, WorkerOptions


def baseline_train(config: TrialConfig, device: torch.device) -> float:
    """The textbook loop: a DataLoader over a TensorDataset, evaluated each epoch."""
    data = load_dataset(config.dataset.source, config.dataset.options)
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, config.model.options, data.input_shape, data.num_classes)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    train_loader = DataLoader(
        TensorDataset(data.train_x, data.train_y), batch_size=config.batch_size, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(data.val_x, data.val_y), batch_size=256)
    accuracy = 0.0
    for _ in range(config.epochs):
        model.train()
        for images, labels in train_loader:
            images, labels = data.normalize(images.to(device)), labels.to(device)
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                predicted = model(data.normalize(images.to(device))).argmax(dim=1)
                correct += int((predicted == labels.to(device)).sum())
        accuracy = correct / len(data.val_y)
    return accuracy


def study_data(trials: int, epochs: int) -> dict:
    return {
        "name": "bench",
        "budget": {"n_trials": trials},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "fixed": {"epochs": epochs, "batch_size": 64, "optimizer": "adam"},
        "params": {
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "width": {"type": "int", "low": 16, "high": 32, "step": 16},
        },
    }


def automl_study(trials: int, epochs: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}", artifacts_dir=Path(tmp))
        study = submit_study(store, validate_spec(study_data(trials, epochs)))
        options = WorkerOptions(device=device, study_id=study.id, exit_when_idle=True)
        Worker(store, options).run()
        best = get_study(store, study.id).best_value
        store.close()
        return float(best or 0.0)


def baseline_study(trials: int, epochs: int, device: torch.device) -> float:
    def objective(trial: optuna.Trial) -> float:
        config = flat_config(
            {
                "epochs": epochs,
                "batch_size": 64,
                "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True),
                "width": trial.suggest_int("width", 16, 32, step=16),
            }
        )
        return baseline_train(config, device)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=trials)
    return study.best_value


def timed(function: Callable[[], float]) -> tuple[float, float]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def compare(name: str, ours: Callable[[], float], base: Callable[[], float], repeats: int) -> None:
    ours_s, base_s = [], []
    for _ in range(repeats):
        seconds, ours_value = timed(ours)
        ours_s.append(seconds)
        seconds, base_value = timed(base)
        base_s.append(seconds)
    a, b = statistics.median(ours_s), statistics.median(base_s)
    print(
        f"{name:<6} automl {a:7.3f}s (acc {ours_value:.3f})  baseline {b:7.3f}s "
        f"(acc {base_value:.3f})  ratio baseline/automl {b / a:5.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(args.device)
    # The last epoch on both sides (the baseline keeps no best epoch).
    values = {"epochs": args.epochs, "batch_size": 64, "lr": 3e-3, "width": 32}
    config = flat_config({**values, "restore_best": False})
    load_dataset("digits")  # both sides start with the data decoded
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    compare(
        "train",
        lambda: train(config, device=device).metrics["accuracy"],
        lambda: baseline_train(config, device),
        args.repeats,
    )
    compare(
        "study",
        lambda: automl_study(args.trials, args.epochs, str(device)),
        lambda: baseline_study(args.trials, args.epochs, device),
        max(1, args.repeats // 2),
    )


if __name__ == "__main__":
    main()
