"""The lease keeper: a lease lost to the reaper stops the trial and is logged; a lease
the worker ended itself is neither. The job keeper renews a post-study job's claim through
outages and says when another worker took it over."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import Backoff, StorageUnavailableError, Store, submit_study
from automl.worker.coordinator import SqlCoordinator
from automl.worker.keeper import JobKeeper, LeaseKeeper
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


@pytest.mark.parametrize("own_tell", [False, True])
def test_a_trial_ended_under_a_held_lease_stops_it_unless_the_worker_ended_it(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
    own_tell: bool,
) -> None:
    """Another tool's tell stops the trial with one warning; the worker's own tell (a beat
    between it and the ticket's end) is neither reported nor a reason to stop."""
    submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2}))
    lease, trial_id = start_trial(sqlite_store)
    keeper = LeaseKeeper(SqlCoordinator(sqlite_store), lease, 60.0, Backoff(logging.getLogger("t")))
    if own_tell:
        keeper.ending()  # what the runner says before its tell
    sqlite_store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])

    with caplog.at_level(logging.WARNING, logger="automl.worker"):
        status = keeper.beat()

    assert status is not None and status.held and status.trial_ended
    assert keeper.trial_ended.is_set() is not own_tell
    assert keeper.should_stop is not own_tell
    warned = [r for r in caplog.records if "ended by another tool" in r.getMessage()]
    assert len(warned) == (0 if own_tell else 1)


def _job_keeper(answers: list[bool | Exception]) -> tuple[JobKeeper, threading.Event]:
    """A keeper whose beats give ``answers`` in turn, then True; the event is set once
    all were given."""
    done = threading.Event()

    def beat() -> bool:
        if not answers:
            done.set()
            return True
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return JobKeeper(beat, 0.01, Backoff(logging.getLogger("t")), "the refit of study 7"), done


def test_a_job_keeper_beats_through_an_outage_until_the_claim_is_gone() -> None:
    outage = StorageUnavailableError("database unreachable")
    keeper, done = _job_keeper([True, outage, outage, True, False])
    with keeper:
        assert keeper.lost.wait(10)
        assert not done.wait(0.2)  # no beat after the claim is gone
    assert keeper.lost.is_set()


def test_a_job_keeper_that_cannot_beat_says_so_once_and_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reviewer: it stopped beating for good, so the claim went stale and another
    worker ran the job too while this one finished it for nothing."""
    refused = RuntimeError("proxy: UNIMPLEMENTED")
    keeper, done = _job_keeper([True, refused, refused, refused])
    with caplog.at_level(logging.WARNING, logger="automl.worker"), keeper:
        assert done.wait(10)  # it beat again after the errors
    assert not keeper.lost.is_set()
    assert caplog.text.count("cannot renew the claim of the refit of study 7") == 1
