"""How the cost of one request grows with the size of its study.

A study's per-request work should not grow with its trials where it need not: the best
trial, a study's detail, the page of a listing, the serving choice of ``predict``, the
weight retention a worker runs after each trial. For each size in ``--sizes`` this builds
a single-objective and a two-objective study of that many COMPLETE trials in one fresh
database (each trial with the user attributes a real trial carries: config, metrics,
per-epoch history, a per-class report and a confusion matrix of ``--classes`` classes,
about 5 KB at 10 classes), then times each operation on each size, alternating sizes,
``--repeats`` times, and prints the medians in milliseconds and the growth ratio
largest / smallest (1.0: flat; the size ratio: linear).

Operations (automl's store calls, as the API's routes make them):

- ``best`` / ``best (2 obj.)``: ``best_trials`` (``GET /studies/{id}/best``, a front's
  first page of 100);
- ``detail``: ``get_study`` (``GET /studies/{id}``);
- ``trials page``: ``list_trials`` first page of 100 (``GET /studies/{id}/trials``);
- ``trials page, no epochs``: the same without per-epoch values (``intermediate_values=
  false``, what the CLI asks for);
- ``serving`` / ``serving (2 obj.)``: ``serving_trial`` (every ``predict`` request);
- ``retention (2 obj.)``: ``retain_weights`` with ``--holders`` trials holding weights
  (a worker after each trial of a multi-objective study);
- ``optuna best_trials (2 obj.)``: the baseline a plain-Optuna user has,
  ``optuna.load_study(...).best_trials`` on the same database (one ``RDBStorage``).

``delete`` (``DELETE /studies/{id}``) is timed once per size at the end (it removes the
study), with ``--holders`` trials holding weights in the artifact store.

    python benchmarks/bench_growth.py [--sizes 100 3000] [--repeats 5] [--classes 10]
        [--holders 20] [--epochs 5] [--backend sqlite|postgres]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from bench_api import database
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from automl.delivery.inference import serving_trial
from automl.spec import StudySpec
from automl.store import (
    Store,
    attrs,
    best_trials,
    delete_study,
    get_study,
    list_trials,
    open_store,
    optuna_rows,
    retain_weights,
    submit_study,
    tables,
)
from automl.train.metrics import DENSE_CONFUSION_CLASSES, MOST_CONFUSED


def spec(name: str, n: int, objectives: int) -> StudySpec:
    """A study of ``n`` trials on digits; two objectives: accuracy up, loss down."""
    data: dict[str, Any] = {
        "name": name,
        "dataset": {"source": "digits"},
        "budget": {"n_trials": n},
        "keep_weights": 3,
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
    }
    if objectives == 2:
        data["objectives"] = [
            {"metric": "accuracy", "direction": "maximize"},
            {"metric": "val_loss", "direction": "minimize"},
        ]
    return StudySpec.model_validate(data)


def trial_attrs(index: int, classes: int, accuracy: float, epochs: int) -> dict[str, Any]:
    """User attributes of the size and shape a real trial's have."""
    per_class = [
        {"class": f"class-{c}", "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 36}
        for c in range(classes)
    ]
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "accuracy": accuracy}
        for e in range(1, epochs + 1)
    ]
    return {
        attrs.TICKET: index + 1,
        attrs.CONFIG: {"epochs": epochs, "lr": 1e-3, "model": {"name": "cnn", "options": {}}},
        attrs.METRICS: {"accuracy": accuracy, "val_loss": 1 - accuracy},
        "history": history,
        "per_class": per_class,
        # As workers keep it: whole up to DENSE_CONFUSION_CLASSES, then the top mistakes.
        **(
            {"confusion": [[index % 7] * classes for _ in range(classes)]}
            if classes <= DENSE_CONFUSION_CLASSES
            else {}
        ),
        "most_confused": [
            {"true": f"class-{c}", "predicted": f"class-{(c + 1) % classes}", "count": 3}
            for c in range(min(classes, MOST_CONFUSED))
        ],
    }


def populate(
    store: Store, study_id: int, n: int, classes: int, objectives: int, epochs: int
) -> None:
    """``n`` COMPLETE trials and their done tickets, as if workers had run them."""
    distribution = FloatDistribution(1e-4, 1e-1, log=True)
    for index in range(n):
        accuracy = (index * 7919 % 1000) / 1000
        loss = ((index * 104729) % 997) / 997
        values = [accuracy] if objectives == 1 else [accuracy, loss]
        trial = FrozenTrial(
            number=0,
            state=TrialState.COMPLETE,
            value=None,
            values=values,
            datetime_start=datetime.now(),
            datetime_complete=datetime.now(),
            params={"lr": 1e-3},
            distributions={"lr": distribution},
            user_attrs=trial_attrs(index, classes, accuracy, epochs),
            system_attrs={},
            intermediate_values={e: accuracy for e in range(1, epochs + 1)},
            trial_id=0,
        )
        store.storage.create_new_trial(study_id, template_trial=trial)
    with store.write() as connection:
        row = {"source": "sampler", "state": "done", "outcome": "complete", "attempt": 1}
        connection.execute(
            tables.tickets.insert(),
            [{**row, "study_id": study_id, "created_at": time.time()} for _ in range(n)],
        )
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(issued=n, status="running")
        )


def give_weights(store: Store, study_id: int, holders: int) -> None:
    """Stores a small artifact as the weights of the first ``holders`` trials."""
    for trial in store.storage.get_all_trials(study_id)[:holders]:
        artifact_id = f"bench-{study_id}-{trial.number}"
        store.artifacts.write(artifact_id, io.BytesIO(b"\0" * 1024))
        with store.write() as connection:
            optuna_rows.put_trial_attrs(connection, trial._trial_id, {attrs.WEIGHTS: artifact_id})


def timed_ms(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 3000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--holders", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with (
        tempfile.TemporaryDirectory() as folder,
        database(args.backend, args.postgres, Path(folder)) as url,
    ):
        store = open_store(url, artifacts_dir=Path(folder) / "artifacts")
        single: dict[int, int] = {}
        double: dict[int, int] = {}
        started = time.perf_counter()
        for size in args.sizes:
            single[size] = submit_study(store, spec(f"one-{size}", size, 1)).id
            populate(store, single[size], size, args.classes, 1, args.epochs)
            double[size] = submit_study(store, spec(f"two-{size}", size, 2)).id
            populate(store, double[size], size, args.classes, 2, args.epochs)
        print(f"built {sum(args.sizes) * 2} trials in {time.perf_counter() - started:.0f}s")

        plain = optuna.storages.RDBStorage(url)  # what a plain-Optuna user reads through

        def optuna_front(study_id: int) -> object:
            name = plain.get_study_name_from_id(study_id)
            return optuna.load_study(study_name=name, storage=plain).best_trials

        operations: dict[str, Callable[[int], object]] = {
            "best": lambda size: best_trials(store, single[size]),
            "best (2 obj.)": lambda size: best_trials(store, double[size], limit=100),
            "detail": lambda size: get_study(store, single[size]),
            "trials page": lambda size: list_trials(store, single[size], limit=100),
            "trials page, no epochs": lambda size: list_trials(
                store, single[size], limit=100, intermediate_values=False
            ),
            "serving": lambda size: serving_trial(store, single[size]),
            "serving (2 obj.)": lambda size: serving_trial(store, double[size]),
            "optuna best_trials (2 obj.)": lambda size: optuna_front(double[size]),
        }
        samples: dict[tuple[str, int], list[float]] = {}
        for repeat in range(args.repeats):
            order = args.sizes if repeat % 2 == 0 else list(reversed(args.sizes))
            for size in order:
                for name, operation in operations.items():
                    samples.setdefault((name, size), []).append(
                        timed_ms(lambda: operation(size))  # noqa: B023 (called at once)
                    )
                give_weights(store, double[size], args.holders)
                samples.setdefault(("retention (2 obj.)", size), []).append(
                    timed_ms(lambda: retain_weights(store, double[size]))  # noqa: B023
                )
        for size in args.sizes:
            give_weights(store, single[size], args.holders)
            with store.write() as connection:  # only an ended study can be deleted
                connection.execute(
                    tables.studies.update()
                    .where(tables.studies.c.study_id == single[size])
                    .values(status="completed", finished_at=time.time())
                )
            samples[("delete", size)] = [timed_ms(lambda: delete_study(store, single[size]))]  # noqa: B023

        small, large = min(args.sizes), max(args.sizes)
        header = f"{'operation':30}" + "".join(f"{f'{size} trials':>14}" for size in args.sizes)
        print(f"{args.backend}, {args.classes} classes, medians of {args.repeats} (ms)")
        print(header + f"{'growth':>10}")
        names = [*operations, "retention (2 obj.)", "delete"]
        for name in names:
            medians = {size: statistics.median(samples[(name, size)]) for size in args.sizes}
            cells = "".join(f"{medians[size]:>14.1f}" for size in args.sizes)
            print(f"{name:30}{cells}{medians[large] / medians[small]:>9.1f}x")
        ratio = statistics.median(
            samples[("optuna best_trials (2 obj.)", large)]
        ) / statistics.median(samples[("best (2 obj.)", large)])
        print(f"best (2 obj.) at {large} trials: {ratio:.1f}x faster than optuna's best_trials")
        store.close()


if __name__ == "__main__":
    main()
