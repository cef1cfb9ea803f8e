"""Side-by-side: the store's cost per operation at 10, 1,000 and 10,000 trials.

automl (a claim is one conditional UPDATE on its own tables, counts are SQL aggregates,
listings read one page) against the design it replaced, rebuilt here from Optuna's public
API: submit enqueues every trial WAITING, a claim is ``study.ask()`` popping one, and a
study view, a trial page and the settle check load every trial of the study.

For each backend (SQLite file, PostgreSQL) and study size N it times:

- submit: a study with a budget of N trials;
- claim: take the next unit of work and create its Optuna trial (baseline: ``ask()``
  on a study with N trials queued);
- get_study: status, counts per state, best value of a study with N finished trials;
- list_trials: the first page of 10 trials of that study;
- settle: the check a worker runs after every trial.

Prints median milliseconds and the ratio baseline / automl (above 1: automl is faster).
Repetitions alternate between the two sides.

    python benchmarks/bench_store.py [--sizes 10 1000 10000] [--backends sqlite postgres]
        [--repeats 5] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from automl.spec import validate_spec
from automl.store import (
    Store,
    attrs,
    claim,
    end_study_if_done,
    get_study,
    list_trials,
    normalize_url,
    open_store,
    record_trial,
    running_trial_template,
    submit_study,
    tables,
)


def spec_for(n_trials: int, name: str) -> Any:
    """A small spec with a budget of ``n_trials``."""
    return validate_spec(
        {
            "name": name,
            "budget": {"n_trials": n_trials, "max_failed": n_trials},
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
            "fixed": {"epochs": 1},
            "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        }
    )


def populate(store: Store, study_id: int, n: int) -> None:
    """Gives an automl study ``n`` finished trials, as if workers had run them (not timed)."""
    distribution = FloatDistribution(1e-4, 1e-1, log=True)
    for index in range(n):
        value = (index * 7919 % 1000) / 1000
        trial = FrozenTrial(
            number=0,
            state=TrialState.COMPLETE,
            value=value,
            datetime_start=datetime.now(),
            datetime_complete=datetime.now(),
            params={"lr": 1e-3},
            distributions={"lr": distribution},
            user_attrs={attrs.TICKET: index + 1},
            system_attrs={},
            intermediate_values={1: value},
            trial_id=0,
        )
        store.storage.create_new_trial(study_id, template_trial=trial)
    with store.write() as connection:
        connection.execute(
            tables.tickets.insert(),
            [
                {
                    "study_id": study_id,
                    "source": "sampler",
                    "state": "done",
                    "outcome": "complete",
                    "attempt": 1,
                    "created_at": time.time(),
                }
                for _ in range(n)
            ],
        )
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(issued=n, status="running")
        )


# --- the replaced design, from Optuna's public API ---------------------------------------------


def baseline_submit(storage: optuna.storages.RDBStorage, name: str, n: int) -> optuna.Study:
    """Creates the study and enqueues all ``n`` trials, one round trip each."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for _ in range(n):
        study.enqueue_trial({})
    return study


def baseline_get_study(storage: optuna.storages.RDBStorage, study_id: int) -> dict[str, Any]:
    """Counts per state and best value by loading every trial."""
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    best = storage.get_best_trial(study_id).value if counts.get("COMPLETE") else None
    return {"counts": counts, "best": best, "attrs": storage.get_study_user_attrs(study_id)}


def baseline_list_trials(storage: optuna.storages.RDBStorage, study_id: int) -> list[FrozenTrial]:
    """The first 10 trials, sliced from all of them."""
    return storage.get_all_trials(study_id, deepcopy=False)[:10]


def baseline_settle(storage: optuna.storages.RDBStorage, study_id: int) -> bool:
    """Whether every queued trial finished, by loading every trial."""
    storage.get_study_user_attrs(study_id)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    return all(trial.state.is_finished() for trial in trials)


# --- timing ------------------------------------------------------------------------------------


def median_ms(samples: list[float]) -> float:
    """Median of seconds, in milliseconds."""
    return statistics.median(samples) * 1000


def alternate(
    automl: Callable[[], object], baseline: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Times both sides ``repeats`` times, alternating; returns their medians in ms."""
    ours, theirs = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        automl()
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        baseline()
        theirs.append(time.perf_counter() - started)
    return median_ms(ours), median_ms(theirs)


def claim_once(store: Store, study_id: int) -> None:
    """The claim path of a worker: the conditional claim, then its Optuna trial."""
    lease = claim(store, "bench", study_id)
    assert lease is not None
    template = running_trial_template({attrs.LEASE: lease.key})
    trial_id = store.storage.create_new_trial(study_id, template_trial=template)
    record_trial(store, lease, trial_id, 0)


def run_size(store: Store, n: int, repeats: int) -> list[tuple[str, float, float]]:
    """All five operations at study size ``n``."""
    rows = []
    tag = uuid.uuid4().hex[:6]
    submit_repeats = repeats if n <= 1000 else 1  # the baseline takes minutes at 10,000
    names = iter(range(1_000_000))
    automl_ms, baseline_ms = alternate(
        lambda: submit_study(store, spec_for(2 * n, f"a{tag}-{next(names)}")),
        lambda: baseline_submit(store.storage, f"b{tag}-{next(names)}", n),
        submit_repeats,
    )
    rows.append(("submit", automl_ms, baseline_ms))

    study_id = submit_study(store, spec_for(2 * n, f"measured-{tag}")).id
    populate(store, study_id, n)
    queued = baseline_submit(store.storage, f"queued-{tag}", n)
    rows.append(("claim", *alternate(lambda: claim_once(store, study_id), queued.ask, repeats)))
    rows.append(
        (
            "get_study",
            *alternate(
                lambda: get_study(store, study_id),
                lambda: baseline_get_study(store.storage, study_id),
                repeats,
            ),
        )
    )
    rows.append(
        (
            "list_trials(limit=10)",
            *alternate(
                lambda: list_trials(store, study_id, limit=10),
                lambda: baseline_list_trials(store.storage, study_id),
                repeats,
            ),
        )
    )
    rows.append(
        (
            "end_if_done",
            *alternate(
                lambda: end_study_if_done(store, study_id),
                lambda: baseline_settle(store.storage, study_id),
                repeats,
            ),
        )
    )
    return rows


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A fresh database on ``server``, dropped afterwards."""
    server = normalize_url(server)
    name = f"automl_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(server).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def backend_store(backend: str, postgres: str, folder: Path) -> Iterator[Store]:
    """An empty store on ``backend``."""
    if backend == "sqlite":
        store = open_store(f"sqlite:///{folder / 'bench.db'}", artifacts_dir=folder / "art")
        try:
            yield store
        finally:
            store.close()
        return
    with postgres_database(postgres) as url:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


def main() -> None:
    """Runs every size on every backend and prints one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    header = ("backend", "trials", "operation", "automl ms", "baseline ms", "ratio")
    print("{:9} {:>6}  {:22} {:>10} {:>12} {:>8}".format(*header))

    for backend in args.backends:
        for n in args.sizes:
            with (
                tempfile.TemporaryDirectory() as tmp,
                backend_store(backend, args.postgres, Path(tmp)) as store,
            ):
                for operation, ours, theirs in run_size(store, n, args.repeats):
                    print(
                        f"{backend:9} {n:>6}  {operation:22} {ours:>10.2f} {theirs:>12.2f} "
                        f"{theirs / ours:>7.1f}x",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
