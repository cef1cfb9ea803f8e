"""How long a warm worker cache takes to give a sampler a big study's trials.

A sampler reads the whole study several times per trial (TPE: once per parameter and
more), through the worker's ``LeanTrialCache``. This reads a SQLite study of ``--trials``
completed trials once (filling the cache), then ``--reads`` times more as TPE does
(``deepcopy=False``, completed trials only), and prints the median of those reads.
There is no baseline inside one checkout: run it from two (an older commit and this one)
alternately, each with ``PYTHONPATH`` at its checkout, on the same ``--db`` (made once):

    python benchmarks/bench_lean_reads.py [--trials 3000] [--reads 1000] [--db PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from automl.store import LeanTrialCache, open_store


def main() -> None:
    """Fills the study once, then times the cache's reads."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/automl-bench-lean-reads.db"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_store(f"sqlite:///{args.db}", artifacts_dir=args.db.parent / "lean-artifacts")
    name = f"big-{args.trials}"
    try:
        study_id = store.storage.get_study_id_from_name(name)
    except KeyError:
        study = optuna.create_study(storage=store.storage, study_name=name)
        lr = FloatDistribution(1e-4, 1.0, log=True)
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={"lr": 0.01 * (number % 7 + 1)}, distributions={"lr": lr}, value=0.5
                )
                for number in range(args.trials)
            ]
        )
        study_id = store.storage.get_study_id_from_name(name)
    cache = LeanTrialCache(store)
    cache.get_all_trials(study_id, deepcopy=False)
    seconds = []
    for _ in range(args.reads):
        started = time.perf_counter()
        cache.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        seconds.append(time.perf_counter() - started)
    store.close()
    print(
        f"{args.trials} trials: a warm read in {statistics.median(seconds) * 1000:.3f} ms (median)"
    )


if __name__ == "__main__":
    main()
