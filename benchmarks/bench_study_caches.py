"""A worker's cache of finished trials: one per study against one for all, forgotten.

A worker reads a big study's trials before each of its trials (samplers, pruners) and
serves other studies in between. Until ``StudyCaches`` it kept one Optuna cache for every
study and started it over once it had read ``--capacity`` studies, so the big study was
read whole again. Both sides, in one process, alternating:

- ``forget-all``: ``optuna.storages.get_storage`` (Optuna's cache), replaced by a new one
  whenever ``--old-capacity`` studies (8, the old default) have been read since the last;
- ``per-study``: ``automl.store.StudyCaches`` with ``--capacity`` (16, the default: the one
  read least recently is dropped). With more studies read in turn than it holds, it reads
  each again too (a least-recently-used cache under a cycle).

Each round reads ``--others`` small studies and then the big one (``--trials`` finished
trials with ``--attr-bytes`` of user attributes each) as a sampler does
(``deepcopy=False``). Printed: the median time of the big study's read after the first
round, each side, and the ratio (above 1: the cache per study is faster).

    python benchmarks/bench_study_caches.py [--trials 5000] [--others 9]
        [--old-capacity 8] [--capacity 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage, RDBStorage

from automl.store import StudyCaches

LR = FloatDistribution(1e-4, 1e-1, log=True)


def populate(
    storage: RDBStorage, trials: int, others: int, attr_bytes: int
) -> tuple[int, list[int]]:
    """The big study and the small ones (one trial each); their ids."""
    big = optuna.create_study(storage=storage, study_name="big")
    big.add_trials(
        [
            optuna.trial.create_trial(
                params={"lr": 0.01},
                distributions={"lr": LR},
                value=0.5,
                user_attrs={"a": "x" * attr_bytes},
            )
            for _ in range(trials)
        ]
    )
    small = []
    for n in range(others):
        study = optuna.create_study(storage=storage, study_name=f"small-{n}")
        study.add_trial(
            optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": LR}, value=0.5)
        )
        small.append(storage.get_study_id_from_name(f"small-{n}"))
    return storage.get_study_id_from_name("big"), small


def forget_all(
    storage: RDBStorage, big: int, small: list[int], capacity: int, rounds: int
) -> list[float]:
    """Seconds of each read of the big study after the first, one cache forgotten past
    ``capacity`` studies."""
    cache: BaseStorage = optuna.storages.get_storage(storage)
    read: set[int] = set()
    times = []
    for round_ in range(rounds + 1):
        for study_id in [*small, big]:
            if study_id not in read and len(read) >= capacity:
                cache, read = optuna.storages.get_storage(storage), set()
            read.add(study_id)
            started = time.perf_counter()
            cache.get_all_trials(study_id, deepcopy=False)
            if study_id == big and round_:
                times.append(time.perf_counter() - started)
    return times


def per_study(
    storage: RDBStorage, big: int, small: list[int], capacity: int, rounds: int
) -> list[float]:
    """The same reads through ``StudyCaches``."""
    caches = StudyCaches(lambda: optuna.storages.get_storage(storage), storage, capacity=capacity)
    times = []
    for round_ in range(rounds + 1):
        for study_id in [*small, big]:
            started = time.perf_counter()
            caches.get_all_trials(study_id, deepcopy=False)
            if study_id == big and round_:
                times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--others", type=int, default=9, help="small studies read in between")
    parser.add_argument("--old-capacity", type=int, default=8)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--attr-bytes", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        storage = RDBStorage(f"sqlite:///{Path(tmp) / 'caches.db'}")
        big, small = populate(storage, args.trials, args.others, args.attr_bytes)
        results: dict[str, list[float]] = {"forget-all": [], "per-study": []}
        for repeat in range(args.repeats):
            sides = [
                ("forget-all", forget_all, args.old_capacity),
                ("per-study", per_study, args.capacity),
            ]
            for name, side, capacity in sides if repeat % 2 == 0 else reversed(sides):
                results[name] += side(storage, big, small, capacity, args.rounds)
    print(
        f"{args.trials} trials in the big study, {args.others} other studies read between "
        f"its reads, capacity {args.old_capacity} (forget-all) and {args.capacity} "
        "(per-study), SQLite"
    )
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, median in medians.items():
        print(f"  {name:10s}: the big study read again in {median * 1000:8.1f} ms (median)")
    print(f"ratio forget-all / per-study: {medians['forget-all'] / medians['per-study']:.0f}x")


if __name__ == "__main__":
    main()
