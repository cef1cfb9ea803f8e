"""The search users write instead of automl: plain Optuna TPE + MedianPruner over an image folder.

Written the way Optuna's PyTorch examples (``pytorch/pytorch_simple.py``) write it: an
``objective(trial)`` that suggests the hyperparameters, builds the model and optimizer,
trains with the textbook torchvision ``ImageFolder`` + ``DataLoader`` loop (PIL decode,
``ToTensor`` and ``Normalize`` per sample, ``num_workers`` loader processes, fp32, eager;
``benchmarks/peers/imagefolder_loop.py``), evaluates on the validation folder after every
epoch, reports the accuracy and raises ``optuna.TrialPruned`` when the pruner says so;
then ``optuna.create_study(direction="maximize", sampler=TPESampler(seed),
pruner=MedianPruner())`` and ``study.optimize(objective, n_trials)``, in memory, one
process. The model is automl's ``cnn`` (built by automl's model builder) so that both sides
of ``benchmarks/bench_search.py`` search the same networks; nothing else is automl's.

The search space (shared with ``bench_search.py``, which writes the same space as an
automl spec):

- ``optimizer``: ``adam`` or ``sgd`` (momentum 0.9, Nesterov: automl's ``sgd`` defaults);
- ``lr``: log-uniform in ``LR_RANGE``;
- ``width``: ``WIDTH_RANGE`` with step ``WIDTH_STEP`` (cnn depth ``DEPTH``);
- ``dropout``: uniform in ``DROPOUT_RANGE``;

with ``--epochs`` epochs at batch size ``BATCH_SIZE``.

Measurement, not part of the search: each trial keeps its final weights in memory (a
state-dict copy, under 100 kB) and the wall-clock times (``time.time()``) at which it
started and ended. Once ``study.optimize`` has returned, every trial's final model is scored on the
test folder, and one JSON object per trial is written to ``--out``: ``number``, ``state``
(``COMPLETE`` or ``PRUNED``), ``value`` (last validation accuracy), ``epochs`` (reported),
``params``, ``started`` and ``ended`` (epoch seconds) and ``test_accuracy``. The test
scoring happens after every timestamp, so it costs the search nothing.

    python benchmarks/peers/optuna_imagefolder_search.py DATA --out trials.jsonl
        [--trials 10] [--epochs 3] [--seed 0] [--workers 2] [--mean M M M --std S S S]
        [--device cpu]

``DATA`` holds ``train/``, ``val/`` and ``test/`` folders of class subfolders.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from automl.models import build_model

if __package__ in (None, ""):  # run as a script: make ``peers`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import imagefolder_loop

LR_RANGE = (1e-3, 3e-2)
WIDTH_RANGE = (8, 32)
WIDTH_STEP = 8
DROPOUT_RANGE = (0.0, 0.4)
DEPTH = 2
BATCH_SIZE = 128
SGD_MOMENTUM = 0.9
SIZE = 32


def define_model(trial: optuna.Trial, classes: int) -> torch.nn.Module:
    """The trial's network: automl's ``cnn`` with the suggested width and dropout."""
    width = trial.suggest_int("width", *WIDTH_RANGE, step=WIDTH_STEP)
    dropout = trial.suggest_float("dropout", *DROPOUT_RANGE)
    return cnn(width, dropout, classes)


def cnn(width: int, dropout: float, classes: int) -> torch.nn.Module:
    """automl's ``cnn`` (depth ``DEPTH``) for ``SIZE`` x ``SIZE`` RGB images."""
    options = {"width": width, "depth": DEPTH, "dropout": dropout}
    return build_model("cnn", options, (3, SIZE, SIZE), classes)


def make_optimizer(trial: optuna.Trial, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The suggested optimizer and learning rate, as the example's ``getattr(optim, name)``."""
    name = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    lr = trial.suggest_float("lr", *LR_RANGE, log=True)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=SGD_MOMENTUM, nesterov=True)


TPE_STARTUP_TRIALS = 10
"""``TPESampler``'s default ``n_startup_trials``: its proposals before it models results."""


def startup_draws(seed: int, trials: int) -> list[dict[str, Any]]:
    """The configurations ``main`` proposes first with this ``seed``: the random start-up
    draws of ``TPESampler(seed)``, at most ``TPE_STARTUP_TRIALS`` of them, asked in the
    objective's order (model, then optimizer). They do not depend on how the trials end,
    so ``bench_search.py --same-draws`` can hand them to automl beforehand."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for _ in range(min(trials, TPE_STARTUP_TRIALS)):
        trial = study.ask()
        make_optimizer(trial, define_model(trial, 2))
        study.tell(trial, 0.0)
    return [trial.params for trial in study.trials]


class Search:
    """The objective, and what the measurement keeps of each trial.

    Args:
        data: Folder with ``train/``, ``val/`` and ``test/``.
        epochs: Training epochs per trial.
        workers: ``DataLoader`` processes.
        mean: ``Normalize`` mean per channel.
        std: ``Normalize`` standard deviation per channel.
        device: Where the models train.
    """

    def __init__(
        self,
        data: Path,
        epochs: int,
        workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
    ) -> None:
        self.data, self.epochs, self.workers = data, epochs, workers
        self.mean, self.std, self.device = list(mean), list(std), device
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def objective(self, trial: optuna.Trial) -> float:
        """Trains one configuration, reporting the validation accuracy after every epoch.

        Raises:
            optuna.TrialPruned: When the pruner stops the trial.
        """
        self.started[trial.number] = time.time()
        train_loader, valid_loader = imagefolder_loop.build_loaders(
            str(self.data / "train"),
            str(self.data / "val"),
            self.mean,
            self.std,
            BATCH_SIZE,
            self.workers,
            flip=False,
            use_cuda=self.device.type == "cuda",
        )
        classes = len(train_loader.dataset.classes)  # type: ignore[attr-defined]
        model = define_model(trial, classes).to(self.device)
        optimizer = make_optimizer(trial, model)
        accuracy = 0.0
        try:
            for epoch in range(self.epochs):
                imagefolder_loop.train(model, self.device, train_loader, optimizer)
                _, accuracy = imagefolder_loop.test(model, self.device, valid_loader)
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        finally:  # measurement only: the final model and when the trial ended
            self.weights[trial.number] = copy.deepcopy(model.state_dict())
            self.ended[trial.number] = time.time()
        return accuracy

    def test_accuracies(self, params: dict[int, dict[str, Any]]) -> dict[int, float]:
        """Scores each kept trial's final model on the test folder (after the search).

        Args:
            params: Each trial's params, by trial number.

        Returns:
            Test accuracy by trial number.
        """
        normalize = transforms.Normalize(mean=self.mean, std=self.std)
        dataset = datasets.ImageFolder(
            str(self.data / "test"), transforms.Compose([transforms.ToTensor(), normalize])
        )
        loader = DataLoader(
            dataset,
            batch_size=imagefolder_loop.TEST_BATCH_SIZE,
            shuffle=False,
            num_workers=self.workers,
        )
        scores = {}
        for number, state in self.weights.items():
            model = cnn(params[number]["width"], params[number]["dropout"], len(dataset.classes))
            model.load_state_dict(state)
            scores[number] = imagefolder_loop.test(model.to(self.device), self.device, loader)[1]
        return scores


def main() -> None:
    """Runs the search, then scores every trial on the test folder and writes the records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with train/, val/ and test/")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per trial")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="TPE sampler seed")
    parser.add_argument("--workers", type=int, default=imagefolder_loop.default_workers())
    parser.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    parser.add_argument("--std", type=float, nargs=3, default=[0.25, 0.25, 0.25])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    search = Search(args.data, args.epochs, args.workers, args.mean, args.std, device)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(search.objective, n_trials=args.trials)

    trials = [t for t in study.trials if t.number in search.weights]
    scores = search.test_accuracies({t.number: t.params for t in trials})
    with args.out.open("w") as out:
        for trial in trials:
            curve = trial.intermediate_values
            record = {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value if trial.value is not None else curve[max(curve)],
                "epochs": len(curve),
                "params": trial.params,
                "started": search.started[trial.number],
                "ended": search.ended[trial.number],
                "test_accuracy": scores[trial.number],
            }
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
