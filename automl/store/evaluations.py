"""The one evaluation of a completed study's best trial(s) on its dataset's test split.

Completing a study (``status.change_status``) marks it due in ``automl_evaluations`` in
the same transaction, so each completion asks exactly once, whoever completed it (a
worker, the reaper, the API). A worker claims a due evaluation with a compare-and-set on
its row, scores the trials (the store never imports training code), and hands the result
back with ``finish_evaluation``: a compare-and-set on its claim that, in the same
transaction, writes the test metrics onto the trials and mirrors the state into the
study's ``automl.test_evaluation`` attribute. Two workers can never both store a result.

Its worker renews the claim while it scores (``beat_evaluation``); a claim whose beats
stopped for ``stale_after`` seconds (the claiming worker's grace period) is taken over, at most
``MAX_TRIES`` claims per completion; then the evaluation ends ``failed``.

Validation drives the search; test metrics live in their own trial attributes
(``automl.test_*``), which no sampler, pruner or warm start reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from automl.spec import StudySpec
from automl.spec_reading import check_readable
from automl.store import attrs, optuna_rows, tables
from automl.store.attrs import StudyStatus
from automl.store.best_reads import best_trials_of
from automl.store.jobs import (
    JOB_STALE_S,
    JobKind,
    Sightings,
    beat_job,
    claim_job,
    held,
    lost_claims,
)
from automl.store.status import iso, lock_study, now
from automl.store.storage import Store
from automl.store.tables import EvaluationState

MAX_TRIES = 3
"""Claims per completion before an evaluation that never reports back ends ``failed``."""

MAX_NOTE_CHARS = 4000


@dataclass(frozen=True)
class EvaluationLease:
    """A worker's claim on one study's test-split evaluation.

    Attributes:
        study_id: The completed study.
        worker_id: The claiming worker.
        attempt: Which claim of the study's evaluation this is (its identity).
        trials: Numbers of the trials to score: the best trial, or the Pareto front.
    """

    study_id: int
    worker_id: str
    attempt: int
    trials: tuple[int, ...]


@dataclass(frozen=True)
class TrialTestReport:
    """One trial's scores on the test split.

    Attributes:
        trial_id: The Optuna trial id.
        number: The trial's number in its study.
        metrics: Every registered metric.
        per_class: Precision, recall, F1 and support of each class.
        confusion: The confusion matrix; rows are true classes, columns predictions
            (None past ``DENSE_CONFUSION_CLASSES`` classes).
        samples: Images in the test split.
        most_confused: The matrix's largest cells off the diagonal (None: not known, from
            a worker before it was kept).
    """

    trial_id: int
    number: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | None
    samples: int
    most_confused: list[dict[str, Any]] | None = None


def _abandon(
    connection: sa.engine.Connection, study_id: int, attempt: int, note: str, at: float
) -> None:
    _end(connection, study_id, attempt, EvaluationState.FAILED, [], note, at)


_JOB = JobKind(
    table=tables.evaluations,
    waiting=EvaluationState.PENDING.value,
    study_statuses=(StudyStatus.COMPLETED.value,),
    attr=attrs.TEST_EVALUATION,
    max_tries=MAX_TRIES,
    abandon=_abandon,
)


def claim_evaluation(
    store: Store,
    worker_id: str,
    study_id: int | None = None,
    *,
    stale_after: float = JOB_STALE_S,
    exclude: Collection[int] = (),
    check: Callable[[int, str], None] = check_readable,
    sightings: Sightings | None = None,
    confirm_after: float = 0.0,
) -> EvaluationLease | None:
    """Claims the oldest due test-split evaluation of a completed study.

    Costs one indexed read when none is due (workers ask between trials).

    Args:
        store: The store.
        worker_id: The claiming worker's unique id.
        study_id: Only claim this study's evaluation.
        stale_after: Seconds after which a running claim counts as abandoned.
        exclude: Studies whose jobs the worker leaves to others.
        check: Refuses a study that the claiming process cannot read (``claim_job``).
        sightings: Confirms a stale claim before it is taken over (``claim_job``).
        confirm_after: See ``sightings``.

    Returns:
        The claim, or None when nothing is due (or another worker was faster).

    Raises:
        UnreadableStudyError: If this process cannot read the due job's study's spec
            (nothing was claimed).
    """
    claim = claim_job(
        store, _JOB, worker_id, study_id, stale_after, exclude, check, sightings, confirm_after
    )
    if claim is None:
        return None
    study, attempt = claim
    spec = StudySpec.model_validate_json(study.spec)
    best = best_trials_of(store, study.study_id, spec.directions)
    return EvaluationLease(
        study_id=study.study_id,
        worker_id=worker_id,
        attempt=attempt,
        trials=tuple(trial.number for trial in best),
    )


def lost_evaluations(
    store: Store, silent_for: float, study_id: int | None = None, exclude: Collection[int] = ()
) -> int:
    """How many test evaluations (of ``study_id``, else of any study but those in ``exclude``) a
    worker holds without a beat for ``silent_for`` seconds (``lost_claims``)."""
    return lost_claims(store, _JOB, silent_for, study_id, exclude)


def beat_evaluation(store: Store, lease: EvaluationLease) -> bool:
    """Renews a claim while its worker scores; False if it is no longer held."""
    return beat_job(store, _JOB, lease.study_id, lease.attempt, lease.worker_id)


def finish_evaluation(
    store: Store,
    lease: EvaluationLease,
    state: EvaluationState,
    reports: Sequence[TrialTestReport] = (),
    note: str | None = None,
) -> bool:
    """Ends a claimed evaluation and stores its test metrics on the trials, atomically.

    Safe to repeat: once this claim stored ``state``, the same call succeeds again.

    Args:
        store: The store.
        lease: The claim.
        state: ``done``, ``skipped`` or ``failed``.
        reports: The scored trials (``done`` only).
        note: Why it was skipped or failed.

    Returns:
        False if the claim was no longer held (taken over, superseded by a later
        completion, or the study was deleted): nothing was stored.

    Raises:
        ValueError: If ``state`` does not end an evaluation.
    """
    if state in (EvaluationState.PENDING, EvaluationState.RUNNING):
        raise ValueError(f"{state.value!r} does not end an evaluation")
    evaluations = tables.evaluations
    with store.write() as connection:
        at = now(connection)
        if lock_study(connection, lease.study_id) is None:
            return False  # deleted (or being deleted): its files are the caller's to remove
        held_row = held(evaluations, lease.study_id, lease.attempt, lease.worker_id)
        row = connection.execute(sa.select(evaluations.c.state).where(held_row)).first()
        if row is None or row.state != EvaluationState.RUNNING.value:
            # Safe to repeat: an earlier call under this claim that committed succeeded.
            return row is not None and row.state == state.value
        _end(connection, lease.study_id, lease.attempt, state, reports, note, at)
    return True


def _end(
    connection: sa.engine.Connection,
    study_id: int,
    attempt: int,
    state: EvaluationState,
    reports: Sequence[TrialTestReport],
    note: str | None,
    at: float,
) -> None:
    evaluations = tables.evaluations
    numbers = [report.number for report in reports]
    note = None if note is None else note[:MAX_NOTE_CHARS]
    connection.execute(
        evaluations.update()
        .where(evaluations.c.study_id == study_id, evaluations.c.attempt == attempt)
        .values(state=state.value, trials=json.dumps(numbers), note=note, finished_at=at)
    )
    for report in reports:
        scores = {
            attrs.TEST_METRICS: report.metrics,
            attrs.TEST_PER_CLASS: report.per_class,
            attrs.TEST_CONFUSION: report.confusion,
        }
        if report.most_confused is not None:
            scores[attrs.TEST_MOST_CONFUSED] = report.most_confused
        optuna_rows.put_trial_attrs(connection, report.trial_id, scores)
    mirror = {"state": state.value, "note": note, "trials": numbers, "finished_at": iso(at)}
    optuna_rows.put_study_attrs(connection, study_id, {attrs.TEST_EVALUATION: mirror})


NO_TEST_SPLIT = "has no test split"
"""How a skipped evaluation's note says why: there is no test split to score on."""


def no_test_split_note(source: str) -> str:
    """The note of an evaluation skipped because dataset ``source`` has no test split."""
    return f"dataset {source!r} {NO_TEST_SPLIT}"


__all__ = [
    "MAX_TRIES",
    "EvaluationLease",
    "TrialTestReport",
    "beat_evaluation",
    "claim_evaluation",
    "finish_evaluation",
    "lost_evaluations",
]
