"""A worker's first read of a study: Optuna's cache (whole trials) against automl's lean one.

Samplers and pruners read every trial of a study before each trial; a worker keeps the
finished ones in memory. Optuna's cache (``optuna.storages.get_storage``) keeps each trial
whole, its per-epoch history (``automl.history``, about 300 bytes an epoch) included;
``automl.store.LeanTrialCache`` leaves out what grows with the epochs or the classes.
The study (``--trials`` finished trials of ``--epochs`` epochs, as workers store them:
params, values, per-epoch objective values, a history of 11 metrics an epoch) is written
once to SQLite; then each side reads it in a fresh process of its own (so that its memory
is its own), the sides alternating, ``--repeats`` times. Printed: the medians of the first
read's seconds, of the memory the cache holds after it and of a later read (what a
sampler pays before each later trial), each side, and the ratios (above 1: the lean
cache is faster, or smaller).

    python benchmarks/bench_lean_cache.py [--trials 1000] [--epochs 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution

METRICS = [
    "loss",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "worst_class_recall",
    "params",
    "latency_ms",
    "batch_latency_ms",
    "lr",
    "train_loss",
    "seconds",
]
LR = FloatDistribution(1e-4, 1e-1, log=True)
LATER_READS = 20


def populate(url: str, trials: int, epochs: int) -> None:
    """The study "big", its trials as a worker stores them (random values, seeded)."""
    rng = random.Random(0)
    study = optuna.create_study(storage=url, study_name="big", direction="maximize")
    batch = []
    for ticket in range(trials):
        history = [
            {"epoch": epoch, **{name: rng.random() for name in METRICS}}
            for epoch in range(1, epochs + 1)
        ]
        batch.append(
            optuna.trial.create_trial(
                params={"lr": 0.01},
                distributions={"lr": LR},
                value=rng.random(),
                intermediate_values={epoch: rng.random() for epoch in range(1, epochs + 1)},
                user_attrs={
                    "automl.history": history,
                    "automl.ticket": ticket,
                    "automl.data": {"classes": 10},
                },
            )
        )
    study.add_trials(batch)


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def read_once(side: str, url: str) -> dict[str, float]:
    """One side's first read of "big" in this process: seconds, and MB held after it."""
    from automl.store import LeanTrialCache
    from automl.store.storage import open_store

    store = open_store(url, artifacts_dir=Path(tempfile.mkdtemp()))
    study_id = store.storage.get_study_id_from_name("big")
    gc.collect()
    before = _resident_mb()
    cache = LeanTrialCache(store) if side == "lean" else optuna.storages.get_storage(store.storage)
    started = time.perf_counter()
    read = cache.get_all_trials(study_id, deepcopy=False)
    seconds = time.perf_counter() - started
    gc.collect()
    held = _resident_mb() - before
    later = []
    for _ in range(LATER_READS):  # what a sampler pays before each later trial
        started = time.perf_counter()
        cache.get_all_trials(study_id, deepcopy=False)
        later.append(time.perf_counter() - started)
    assert len(read) > 0
    return {
        "seconds": seconds,
        "held_mb": held,
        "later_ms": statistics.median(later) * 1000,
        "trials": len(read),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=["optuna", "lean"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.side:  # a child: one read, its figures as JSON
        print(json.dumps(read_once(args.side, args.url)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'lean.db'}"
        populate(url, args.trials, args.epochs)
        results: dict[str, list[dict[str, float]]] = {"optuna": [], "lean": []}
        for repeat in range(args.repeats):
            sides = ["optuna", "lean"] if repeat % 2 == 0 else ["lean", "optuna"]
            for side in sides:
                command = [sys.executable, __file__, "--side", side, "--url", url]
                answer = subprocess.run(command, capture_output=True, text=True, check=True)
                results[side].append(json.loads(answer.stdout.strip().splitlines()[-1]))
    print(f"{args.trials} trials of {args.epochs} epochs, SQLite, first read in a fresh process")
    medians = {
        side: {
            key: statistics.median(r[key] for r in runs)
            for key in ("seconds", "held_mb", "later_ms")
        }
        for side, runs in results.items()
    }
    for side, median in medians.items():
        print(
            f"  {side:6s}: {median['seconds']:7.2f} s, {median['held_mb']:7.0f} MB held, "
            f"a later read {median['later_ms']:6.2f} ms"
        )
    seconds = medians["optuna"]["seconds"] / medians["lean"]["seconds"]
    memory = medians["optuna"]["held_mb"] / max(medians["lean"]["held_mb"], 1.0)
    print(f"ratio optuna / lean: time {seconds:.1f}x, memory {memory:.1f}x")


if __name__ == "__main__":
    main()
