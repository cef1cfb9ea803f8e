"""Helpers that play a worker's part against the store, without training anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from automl.store import (
    FailureKind,
    Lease,
    Store,
    attrs,
    claim,
    finish,
    record_trial,
    running_trial_template,
)

Outcome = float | Sequence[float] | TrialState | FailureKind
"""How to end a driven trial: its value(s), PRUNED, FAIL (an ``error`` failure), a failure
kind, or RUNNING (left running)."""


def start_trial(
    store: Store, study_id: int | None = None, worker: str = "worker-a"
) -> tuple[Lease, int]:
    """Claims a ticket and creates its Optuna trial as a worker does; returns both."""
    lease = claim(store, worker, study_id)
    assert lease is not None, "nothing to claim"
    template = running_trial_template({attrs.LEASE: lease.key, attrs.TICKET: lease.ticket_id})
    trial_id = store.storage.create_new_trial(lease.study_id, template)
    number = store.storage.get_trial(trial_id).number
    record_trial(store, lease, trial_id, number)
    return lease, trial_id


def complete_trial(storage: BaseStorage, trial_id: int, values: Sequence[float]) -> None:
    """Records a result and tells the trial COMPLETE with ``values``, as a worker does (its
    ``automl.metrics`` first, unless the test recorded them: only trials with them rank)."""
    if attrs.METRICS not in storage.get_trial(trial_id).user_attrs:
        metrics = {f"objective_{i}": value for i, value in enumerate(values)}
        storage.set_trial_user_attr(trial_id, attrs.METRICS, metrics)
    storage.set_trial_state_values(trial_id, TrialState.COMPLETE, list(values))


def end_trial(store: Store, lease: Lease, trial_id: int, outcome: Outcome) -> None:
    """Tells Optuna how the trial ended and ends its ticket, as a worker does."""
    storage = store.storage
    if isinstance(outcome, FailureKind) or outcome == TrialState.FAIL:
        kind = outcome if isinstance(outcome, FailureKind) else FailureKind.ERROR
        storage.set_trial_user_attr(trial_id, attrs.FAILURE, kind.value)
        storage.set_trial_user_attr(trial_id, attrs.ERROR, f"{kind.value} in test")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        finish(store, lease, "fail", kind)
    elif outcome == TrialState.PRUNED:
        storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        finish(store, lease, "pruned")
    else:
        values = list(outcome) if isinstance(outcome, Sequence) else [float(outcome)]  # type: ignore[arg-type]
        storage.set_trial_param(trial_id, "x", 0.5, FloatDistribution(0, 1))
        complete_trial(storage, trial_id, values)
        finish(store, lease, "complete")


def drive(store: Store, study_id: int, outcomes: Sequence[Outcome]) -> list[tuple[Lease, int]]:
    """Runs one trial per outcome; RUNNING leaves it running. Returns the leases."""
    started = []
    for outcome in outcomes:
        lease, trial_id = start_trial(store, study_id)
        started.append((lease, trial_id))
        if outcome != TrialState.RUNNING:
            end_trial(store, lease, trial_id, outcome)
    return started


@contextmanager
def sqlite_write_lock_held(store: Store) -> Iterator[None]:
    """Holds SQLite's write lock (``BEGIN IMMEDIATE``) for the block, as a long write
    would: every other writer, heartbeats and reaps included, waits."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.write() as connection:
            connection.execute(sa.text("SELECT 1"))
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        yield
    finally:
        release.set()
        holder.join()
