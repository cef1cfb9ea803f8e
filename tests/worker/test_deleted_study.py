"""A study deleted under a worker that is running one of its trials: the worker drops the
trial, says so once (INFO: a user's action, not a fault), and goes on with other work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import automl.worker.loop
import automl.worker.runner
from automl.spec import StudySpec
from automl.store import (
    NoBestTrialError,
    Store,
    StudyNotFoundError,
    StudyStatus,
    best_trials,
    cancel_study,
    delete_study,
    get_study,
    submit_study,
)
from automl.store.studies import OPTUNA_STUDY_GONE
from automl.worker import Worker
from tests.worker.options import fast_options

SpecFactory = Callable[..., StudySpec]


def _two_studies(store: Store, tiny_spec: SpecFactory) -> tuple[int, int]:
    doomed = submit_study(store, tiny_spec(name="doomed", budget={"n_trials": 1})).id
    other = submit_study(store, tiny_spec(name="other", budget={"n_trials": 2})).id
    return doomed, other


def _deleting_first(store: Store, study_id: int, then: Callable[..., Any]) -> Callable[..., Any]:
    """``then``, after deleting ``study_id`` (once) as a user would: cancel, then delete."""

    def deleting(*args: Any, **kwargs: Any) -> Any:
        try:
            get_study(store, study_id)
        except StudyNotFoundError:
            return then(*args, **kwargs)
        cancel_study(store, study_id)
        delete_study(store, study_id)
        return then(*args, **kwargs)

    return deleting


@pytest.mark.parametrize("moment", ["data_check", "tell"])
def test_a_study_deleted_while_its_trial_runs_leaves_the_worker_working(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    moment: str,
) -> None:
    """Found by a tester: a study deleted as its trial checked its data made the trial's
    failure path read the deleted trial, and the ``KeyError`` ended the worker process."""
    store = sqlite_store
    doomed, other = _two_studies(store, tiny_spec)
    attempt = automl.worker.runner._Attempt
    name = {"data_check": "_require_study_data", "tell": "_tell"}[moment]
    monkeypatch.setattr(attempt, name, _deleting_first(store, doomed, getattr(attempt, name)))
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(store, fast_options()).run()

    assert get_study(store, other).status == StudyStatus.COMPLETED
    with pytest.raises(StudyNotFoundError):
        get_study(store, doomed)
    said = [r for r in caplog.records if f"study {doomed} was deleted" in r.getMessage()]
    assert [record.levelno for record in said] == [logging.INFO]
    blamed = ("was taken while it ran", "result rejected", "settling failed")
    assert not [r for r in caplog.records if any(b in r.getMessage() for b in blamed)]


def test_an_unexpected_error_in_one_ticket_does_not_end_the_worker(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = sqlite_store
    first, other = _two_studies(store, tiny_spec)
    run_lease = automl.worker.loop.run_lease
    failed: list[int] = []

    def failing_once(ctx: Any, lease: Any, *args: Any) -> Any:
        if not failed:
            failed.append(lease.study_id)
            raise RuntimeError("a bug in the bookkeeping")
        return run_lease(ctx, lease, *args)

    monkeypatch.setattr(automl.worker.loop, "run_lease", failing_once)

    Worker(store, fast_options()).run()

    assert failed == [first]
    assert get_study(store, other).status == StudyStatus.COMPLETED
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"study {first}: unexpected error; the worker goes on" in record.getMessage()
    assert record.exc_info is not None and "a bug in the bookkeeping" in caplog.text
    # Its ticket ended failed with the error at once (not left running for the reaper).
    detail = get_study(store, first)
    assert (detail.counts.running, detail.counts.fail) == (0, 1)


def test_unexpected_errors_in_several_tickets_in_a_row_end_the_worker(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that fails every ticket is the worker's: it must be seen, not burn budgets."""
    submit_study(sqlite_store, tiny_spec(budget={"n_trials": 5, "max_failed": 5}))

    def failing(*args: Any) -> Any:
        raise RuntimeError("a bug in the bookkeeping")

    monkeypatch.setattr(automl.worker.loop, "run_lease", failing)

    with pytest.raises(RuntimeError, match="a bug in the bookkeeping"):
        Worker(sqlite_store, fast_options()).run()


@pytest.mark.parametrize("through", ["database", "proxy"])
def test_a_study_whose_optuna_study_was_deleted_elsewhere_fails_saying_why(
    store: Store,
    tiny_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    through: str,
) -> None:
    """Found by a tester: after plain optuna-dashboard deleted a running study, workers
    failed its tickets one by one ("cannot load study: 'Record does not exist.'") and the
    study ended ``completed``, 'all trials finished'."""
    doomed, other = _two_studies(store, tiny_spec)
    store.storage.delete_study(doomed)  # as optuna-dashboard and `optuna delete-study` do
    caplog.set_level(logging.INFO, logger="automl.worker")
    if through == "proxy":
        worker = Worker(None, fast_options(), coordinator=request.getfixturevalue("proxy"))
    else:
        worker = Worker(store, fast_options())

    worker.run()

    detail = get_study(store, doomed)
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason is not None and "deleted outside automl" in detail.status_reason
    assert get_study(store, other).status == StudyStatus.COMPLETED
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"study {doomed} failed: " + OPTUNA_STUDY_GONE.format(study_id=doomed)]


def test_an_ended_study_whose_optuna_study_was_deleted_elsewhere_says_so(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by a tester: after `optuna delete-study`, `automl best` said the study "ended
    (completed) without a completed trial" beside its count of 3 completed."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    Worker(store, fast_options()).run()
    store.storage.delete_study(study_id)

    with pytest.raises(NoBestTrialError, match="deleted outside automl") as raised:
        best_trials(store, study_id)
    assert raised.value.ended


def test_a_study_deleted_elsewhere_after_its_first_trial_fails_too(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A reviewer: a worker that had run one of its trials kept the study loaded, so the
    next ticket failed creating its trial (``StudyNotFoundError``) and every later one
    too, and the study ended ``completed``."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 3})).id

    def delete_after_the_first(study: int, trial: Any, result: Any) -> None:
        if store.storage.get_all_studies():
            store.storage.delete_study(study)

    Worker(store, fast_options(), on_trial_end=delete_after_the_first).run()

    detail = get_study(store, study_id)
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason is not None and "deleted outside automl" in detail.status_reason
    assert detail.counts.fail == 1  # the one ticket that found the study gone
