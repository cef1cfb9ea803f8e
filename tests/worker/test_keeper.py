"""The lease keeper: a lease lost to the reaper stops the trial and is logged; a lease
the worker ended itself is neither."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from automl.spec import StudySpec
from automl.store import Backoff, Store, submit_study
from automl.worker.coordinator import SqlCoordinator
from automl.worker.keeper import LeaseKeeper
from tests.store.conftest import end_trial, start_trial

SpecFactory = Callable[..., StudySpec]
LOST = "lost the lease"


def _keeper_of_an_ended_ticket(store: Store, tiny_spec: SpecFactory) -> LeaseKeeper:
    submit_study(store, tiny_spec(budget={"n_trials": 2}))
    lease, trial_id = start_trial(store)
    keeper = LeaseKeeper(SqlCoordinator(store), lease, 60.0, Backoff(logging.getLogger("t")))
    end_trial(store, lease, trial_id, 0.5)  # tells Optuna and ends the ticket
    return keeper


def test_a_lease_gone_under_the_worker_is_logged_and_stops_the_trial(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = _keeper_of_an_ended_ticket(sqlite_store, tiny_spec)
    with caplog.at_level(logging.WARNING, logger="automl.worker"):
        status = keeper.beat()
    assert status is not None and not status.held
    assert keeper.lost.is_set() and keeper.should_stop
    assert [r for r in caplog.records if LOST in r.getMessage()]


def test_a_lease_the_worker_ended_itself_is_not_reported_lost(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = _keeper_of_an_ended_ticket(sqlite_store, tiny_spec)
    keeper.ending()  # what the runner says before it ends or gives back the ticket
    with caplog.at_level(logging.WARNING, logger="automl.worker"):
        status = keeper.beat()
    assert status is not None and not status.held
    assert not [r for r in caplog.records if LOST in r.getMessage()]
