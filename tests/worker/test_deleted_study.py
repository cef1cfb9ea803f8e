"""A study deleted under a worker that is running one of its trials: the worker drops the
trial, says so once (INFO: a user's action, not a fault), and goes on with other work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import optuna
import pytest
import sqlalchemy

import automl.worker.loop
import automl.worker.runner
from automl.spec import StudySpec
from automl.store import (
    NoBestTrialError,
    Store,
    StudyNotFoundError,
    StudyStateError,
    StudyStatus,
    TrialNotFoundError,
    attrs,
    best_trials,
    cancel_study,
    delete_study,
    get_study,
    get_trial,
    list_trials,
    optuna_rows,
    rerun_failed,
    resume_study,
    submit_study,
)
from automl.worker import Worker
from automl.worker.loop import MAX_UNEXPECTED_IN_A_ROW
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


def test_a_study_whose_tickets_keep_failing_unexpectedly_is_left_to_other_workers(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One study's bug must neither burn its whole budget here nor stop the worker (and
    with it every other study, as a reviewer found when three errors ended the worker)."""
    store = sqlite_store
    broken = submit_study(store, tiny_spec(name="broken", budget={"n_trials": 6})).id
    other = submit_study(store, tiny_spec(name="other", budget={"n_trials": 2})).id
    run_lease = automl.worker.loop.run_lease

    def failing_for_one_study(ctx: Any, lease: Any, *args: Any) -> Any:
        if lease.study_id == broken:
            raise RuntimeError("a bug in the bookkeeping")
        return run_lease(ctx, lease, *args)

    monkeypatch.setattr(automl.worker.loop, "run_lease", failing_for_one_study)

    Worker(store, fast_options()).run()

    counts = get_study(store, broken).counts
    assert (counts.fail, counts.waiting, counts.running) == (MAX_UNEXPECTED_IN_A_ROW, 3, 0)
    assert get_study(store, other).status == StudyStatus.COMPLETED
    assert f"study {broken}: 3 tickets in a row failed unexpectedly here" in caplog.text


def test_a_storage_fault_no_caller_expected_gives_the_ticket_back(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: it ended the ticket failed, counting toward ``max_failed``."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    run_lease = automl.worker.loop.run_lease
    faults: list[int] = []

    def a_fault_once(ctx: Any, lease: Any, *args: Any) -> Any:
        if not faults:
            faults.append(lease.ticket_id)
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed"))
        return run_lease(ctx, lease, *args)

    monkeypatch.setattr(automl.worker.loop, "run_lease", a_fault_once)

    Worker(sqlite_store, fast_options()).run()

    detail = get_study(sqlite_store, study_id)
    assert (detail.status, detail.counts.complete, detail.counts.fail) == (
        StudyStatus.COMPLETED,
        2,
        0,
    )


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
    # A tester: resume and rerun-failed were accepted, and failed again at the next claim.
    for change in (lambda: resume_study(store, study_id, 1), lambda: rerun_failed(store, study_id)):
        with pytest.raises(StudyStateError, match="deleted outside automl"):
            change()


def _plain_study_under_the_id(store: Store, study_id: int, mark: str | None) -> optuna.Study:
    """Another tool's study made under ``study_id`` once automl's Optuna study was deleted
    outside automl (as Optuna's own SQLite table gives a deleted id out again), with one
    trial of its user's, and automl's creation ``mark`` if given (as a copy of another
    automl study carries it)."""
    store.storage.delete_study(study_id)
    with store.write() as connection:
        connection.execute(
            optuna_rows.studies.insert().values(study_id=study_id, study_name="mine")
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO study_directions (study_id, objective, direction) "
                "VALUES (:id, 0, 'MINIMIZE')"
            ),
            {"id": study_id},
        )
    plain = optuna.load_study(study_name="mine", storage=store.storage)
    if mark is not None:
        plain.set_user_attr(attrs.CREATED_AT, mark)
    plain.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    return plain


@pytest.mark.parametrize("copied", [False, True], ids=["plain", "copy-of-another"])
def test_another_tools_study_under_a_reused_id_is_never_trained_listed_or_deleted(
    store: Store, tiny_spec: SpecFactory, copied: bool
) -> None:
    """Found by a tester: on a SQLite file that Optuna created, a study made after an
    automl study's Optuna study was deleted outside automl got its id; the worker trained
    automl's trials into it, ``automl trials`` listed the user's, and ``automl delete``
    deleted it. A reviewer: so it did for a copy of another automl study (its mark)."""
    other = submit_study(store, tiny_spec(name="other", budget={"n_trials": 1})).id
    mark = store.reader.get_study_user_attrs(other)[attrs.CREATED_AT] if copied else None
    cancel_study(store, other)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    plain = _plain_study_under_the_id(store, study_id, mark)

    Worker(store, fast_options()).run()

    detail = get_study(store, study_id)
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason is not None and "deleted outside automl" in detail.status_reason
    assert list_trials(store, study_id).count == 0
    with pytest.raises(NoBestTrialError, match="deleted outside automl"):
        best_trials(store, study_id)
    assert [trial.value for trial in plain.trials] == [1.0]  # nothing of automl's added
    assert attrs.STATUS not in plain.user_attrs  # nor its status mirrored there
    with pytest.raises(TrialNotFoundError):
        get_trial(store, study_id, 0)

    delete_study(store, study_id)

    with pytest.raises(StudyNotFoundError):
        get_study(store, study_id)
    kept = optuna.load_study(study_name="mine", storage=store.storage)
    assert [trial.value for trial in kept.trials] == [1.0]
