"""The refit of a study's best configuration on train + validation, claimed once.

A refit is asked for by ``refit: true`` in the spec (queued in the transaction that
completes the study, ``status.request_refit``) or later by ``queue_refit``. A worker claims
a queued refit of an ended study with a compare-and-set on its ``automl_refits`` row,
retrains the best trial's configuration (the store never imports training code), writes the
weights and model card to the artifact store, and hands the result back with
``finish_refit``: a compare-and-set on its claim that stores the result on the row and
mirrors it into the study's ``automl.refit`` attribute in the same transaction, so two
workers can never both store one. The worker beats (``beat_refit``) while it trains; a claim
whose beats stopped for ``stale_after`` seconds is taken over, at most ``MAX_TRIES`` times
per request, then the refit ends ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from automl.spec import StudySpec
from automl.spec_reading import check_readable
from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import remove_quietly
from automl.store.jobs import JobKind, claim_job, held, job_result, release_job
from automl.store.status import ENDED, iso, lock_study, now
from automl.store.storage import Store
from automl.store.tables import DELETING, RefitState
from automl.store.views import RefitView

REFIT_STALE_S = 600.0
"""A claim not renewed for this long is taken to be abandoned and taken over."""

REFIT_BEAT_S = 60.0
"""How often a worker renews its claim while it trains (well under ``REFIT_STALE_S``)."""

MAX_TRIES = 3
"""Claims per request before a refit that never reports back ends ``failed``."""

MAX_NOTE_CHARS = 4000


@dataclass(frozen=True)
class RefitLease:
    """A worker's claim on one study's refit.

    Attributes:
        study_id: The ended study.
        worker_id: The claiming worker.
        attempt: Which claim of the study's refit this is (its identity).
        trial_number: The best trial, whose configuration is retrained; None when the
            study has no single best trial (the refit then ends ``failed``).
    """

    study_id: int
    worker_id: str
    attempt: int
    trial_number: int | None


@dataclass(frozen=True)
class RefitResult:
    """A finished refit: the retrained model and its scores on the test split.

    Attributes:
        trial_number: The trial whose configuration was retrained.
        epochs: Epochs trained (those the trial ran).
        train_samples: Images trained on (training plus validation split).
        weights: Artifact id of the weights (safetensors).
        card: Artifact id of the model card (JSON), if it was stored.
        test_metrics: Every registered metric on the test split.
        test_per_class: Precision, recall, F1 and support of each class.
        test_confusion: The confusion matrix; rows are true classes, columns predictions
            (None past ``DENSE_CONFUSION_CLASSES`` classes: its most frequent mistakes are
            not kept for a refit, whose stored result an API of an automl before them
            could not read; the trial's own test evaluation keeps them).
        test_samples: Images in the test split.
        duration_s: Seconds the training took.
    """

    trial_number: int
    epochs: int
    train_samples: int
    weights: str
    card: str | None
    test_metrics: dict[str, float]
    test_per_class: list[dict[str, Any]]
    test_confusion: list[list[int]] | None
    test_samples: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RefitResult:
        """The result that ``to_json`` wrote (fields a newer automl added are left out)."""
        return job_result(cls, data)


def _abandon(
    connection: sa.engine.Connection, study_id: int, attempt: int, note: str, at: float
) -> None:
    _end(connection, study_id, attempt, RefitState.FAILED, None, note, at)


_JOB = JobKind(
    table=tables.refits,
    waiting=RefitState.QUEUED.value,
    study_statuses=ENDED,
    attr=attrs.REFIT,
    max_tries=MAX_TRIES,
    abandon=_abandon,
)


def claim_refit(
    store: Store,
    worker_id: str,
    study_id: int | None = None,
    *,
    stale_after: float = REFIT_STALE_S,
    exclude: Collection[int] = (),
    check: Callable[[int, str], None] = check_readable,
) -> RefitLease | None:
    """Claims the oldest due refit of an ended study.

    Costs one indexed read when none is due (workers ask between trials).

    Args:
        store: The store.
        worker_id: The claiming worker's unique id.
        study_id: Only claim this study's refit.
        stale_after: Seconds after which a claim without beats counts as abandoned.
        exclude: Studies whose jobs the worker leaves to others.
        check: Refuses a study that the claiming process cannot read (``claim_job``).

    Returns:
        The claim, or None when nothing is due (or another worker was faster).

    Raises:
        UnreadableStudyError: If this process cannot read the due job's study's spec
            (nothing was claimed).
    """
    claim = claim_job(store, _JOB, worker_id, study_id, stale_after, exclude, check)
    if claim is None:
        return None
    study, attempt = claim
    with store.read() as connection:
        number = refit_trial_number(connection, study.study_id, study.spec)
    return RefitLease(study.study_id, worker_id, attempt, number)


def beat_refit(store: Store, lease: RefitLease) -> bool:
    """Renews a claim while its worker trains; False if it is no longer held."""
    refits = tables.refits
    with store.write() as connection:
        renewed = connection.execute(
            refits.update()
            .where(
                held(refits, lease.study_id, lease.attempt, lease.worker_id),
                refits.c.state == RefitState.RUNNING.value,
            )
            .values(claimed_at=tables.db_now())
        )
    return renewed.rowcount == 1


def release_refit(store: Store, lease: RefitLease) -> bool:
    """Gives the claim back unfinished (its worker is stopping), so another worker takes
    it at once; False if it was no longer held."""
    return release_job(store, _JOB, lease.study_id, lease.attempt, lease.worker_id)


def finish_refit(
    store: Store,
    lease: RefitLease,
    state: RefitState,
    result: RefitResult | None = None,
    note: str | None = None,
) -> bool:
    """Ends a claimed refit and stores its result, atomically.

    A ``done`` result replaces the previous one, whose artifacts are then removed. Safe to
    repeat: once this claim stored ``state``, the same call succeeds again.

    Args:
        store: The store.
        lease: The claim.
        state: ``done`` (with ``result``) or ``failed``.
        result: The retrained model and its test metrics.
        note: Why it failed.

    Returns:
        False if the claim was no longer held (taken over, superseded by a later request,
        or the study was deleted): nothing was stored, and the caller removes the
        artifacts it wrote.

    Raises:
        ValueError: If ``state`` does not end a refit, or ``done`` comes without a result.
    """
    if state not in (RefitState.DONE, RefitState.FAILED):
        raise ValueError(f"{state.value!r} does not end a refit")
    if state == RefitState.DONE and result is None:
        raise ValueError("a done refit needs its result")
    refits = tables.refits
    with store.write() as connection:
        at = now(connection)
        if lock_study(connection, lease.study_id) is None:
            return False  # deleted (or being deleted): its files are the caller's to remove
        held_row = held(refits, lease.study_id, lease.attempt, lease.worker_id)
        row = connection.execute(
            sa.select(refits.c.state, refits.c.weights, refits.c.card).where(held_row)
        ).first()
        if row is None or row.state != RefitState.RUNNING.value:
            # Safe to repeat: an earlier call under this claim that committed succeeded.
            return row is not None and row.state == state.value
        _end(connection, lease.study_id, lease.attempt, state, result, note, at)
    if result is not None:
        # The previous result's files, and those of attempts that died before finishing.
        earlier = _attempts_artifacts(lease.study_id, range(1, lease.attempt))
        for artifact_id in {row.weights, row.card, *earlier} - {result.weights, result.card, None}:
            remove_quietly(store.artifacts, artifact_id)
    return True


def _end(
    connection: sa.engine.Connection,
    study_id: int,
    attempt: int,
    state: RefitState,
    result: RefitResult | None,
    note: str | None,
    at: float,
) -> None:
    note = None if note is None else note[:MAX_NOTE_CHARS]
    values: dict[str, Any] = {"state": state.value, "note": note, "finished_at": at}
    mirror: dict[str, Any] = {"state": state.value, "note": note, "finished_at": iso(at)}
    if result is not None:
        values.update(
            trial_number=result.trial_number,
            result=json.dumps(result.to_json(), allow_nan=False),
            weights=result.weights,
            card=result.card,
        )
        mirror.update(result.to_json())
    connection.execute(
        tables.refits.update()
        .where(tables.refits.c.study_id == study_id, tables.refits.c.attempt == attempt)
        .values(**values)
    )
    optuna_rows.put_study_attrs(connection, study_id, {attrs.REFIT: mirror})


def read_refit(connection: sa.engine.Connection, study_id: int) -> RefitView | None:
    """Where the study's refit stands (None if never asked for), with its result once
    ``done``: a refit queued again (the study was resumed and found a better trial) shows
    none until it is done, not the result of the one before, which no longer serves."""
    row = connection.execute(
        sa.select(tables.refits).where(tables.refits.c.study_id == study_id)
    ).first()
    if row is None:
        return None
    done = row.state == RefitState.DONE and row.result is not None
    result = RefitResult.from_json(json.loads(row.result)) if done else None
    return RefitView(
        state=RefitState(row.state),
        note=row.note,
        trial=None if result is None else result.trial_number,
        epochs=None if result is None else result.epochs,
        train_samples=None if result is None else result.train_samples,
        test_metrics=None if result is None else result.test_metrics,
        test_per_class=None if result is None else result.test_per_class,
        test_confusion=None if result is None else result.test_confusion,
        test_samples=None if result is None else result.test_samples,
        requested_at=_datetime(row.requested_at),
        finished_at=_datetime(row.finished_at),
    )


def served_refit(store: Store, study_id: int) -> RefitResult | None:
    """The refit result that serves the study's predictions: the latest one, while the
    refit is ``done`` and its trial is still the study's best (None otherwise: a resumed
    study may have found a better trial since)."""
    refits, studies = tables.refits, tables.studies
    with store.read() as connection:
        row = connection.execute(
            sa.select(refits.c.state, refits.c.result, studies.c.spec)
            .join(studies, studies.c.study_id == refits.c.study_id)
            .where(refits.c.study_id == study_id)
        ).first()
        result = None if row is None else _done_result(row.state, row.result)
        if result is None:
            return None
        best = refit_trial_number(connection, study_id, row.spec)
    return result if best == result.trial_number else None


@dataclass(frozen=True)
class ServingPick:
    """What answers a single-objective study's predictions, read in one snapshot.

    Attributes:
        trial_id: The study's best trial (as ``best_trial_id`` ranks them).
        number: Its number.
        refit: The refit result that serves in its place (as ``served_refit`` decides),
            or None: the trial's own weights serve.
    """

    trial_id: int
    number: int
    refit: RefitResult | None


def serving_pick(store: Store, study_id: int) -> ServingPick | None:
    """The trial, and the refit if one serves, that answer the study's predictions.

    Two statements (the study with its refit, then its best trial: one ``ORDER BY ...
    LIMIT 1``), whatever the study's size; the same answer as ``served_refit`` and
    ``best_trial_id`` give.

    Returns:
        None when that takes more: there is no such study (or it is being deleted), it
        has several objectives, or no trial has completed.
    """
    refits, studies = tables.refits, tables.studies
    with store.read() as connection:
        row = connection.execute(
            sa.select(studies.c.spec, refits.c.state, refits.c.result)
            .outerjoin(refits, refits.c.study_id == studies.c.study_id)
            .where(studies.c.study_id == study_id, studies.c.status != DELETING)
        ).first()
        if row is None:
            return None
        directions = StudySpec.model_validate_json(row.spec).directions
        if len(directions) != 1:
            return None
        best = optuna_rows.top_ranked(connection, study_id, directions[0] == "maximize", 1)
    if not best:
        return None
    trial_id, _, number = best[0]
    result = _done_result(row.state, row.result)
    refit = result if result is not None and result.trial_number == number else None
    return ServingPick(trial_id, number, refit)


def _done_result(state: str | None, result: str | None) -> RefitResult | None:
    """A refit row's latest result while the refit is ``done`` (None otherwise)."""
    if state != RefitState.DONE.value or result is None:
        return None
    return RefitResult.from_json(json.loads(result))


def refit_trial_number(connection: sa.engine.Connection, study_id: int, spec: str) -> int | None:
    """The trial a refit of the study retrains now: its best on its only objective (None
    with several objectives or no completed trial). ``spec`` is the stored spec JSON."""
    directions = StudySpec.model_validate_json(spec).directions
    if len(directions) != 1:
        return None
    return optuna_rows.best_trial_number(connection, study_id, directions[0] == "maximize")


def refit_artifact_ids(study_id: int, attempt: int) -> tuple[str, str]:
    """The weights and model-card artifact ids of one refit attempt.

    Named by attempt, not at random: a worker killed between writing them and
    ``finish_refit`` leaves files that the next result, or the study's deletion, finds by
    name (each claim has an attempt of its own, never reused within a study).
    """
    prefix = f"refit-{study_id}-{attempt}"
    return f"{prefix}.safetensors", f"{prefix}-model_card.json"


def refit_artifacts(connection: sa.engine.Connection, study_id: int) -> Iterable[str]:
    """Every artifact id the study's refit attempts may have written (for deleting it)."""
    refits = tables.refits
    row = connection.execute(
        sa.select(refits.c.attempt, refits.c.weights, refits.c.card).where(
            refits.c.study_id == study_id
        )
    ).first()
    if row is None:
        return []
    recorded = [artifact for artifact in (row.weights, row.card) if artifact is not None]
    return [*recorded, *_attempts_artifacts(study_id, range(1, row.attempt + 1))]


def _attempts_artifacts(study_id: int, attempts: Iterable[int]) -> list[str]:
    return [artifact for a in attempts for artifact in refit_artifact_ids(study_id, a)]


def _datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


__all__ = [
    "MAX_TRIES",
    "REFIT_BEAT_S",
    "REFIT_STALE_S",
    "RefitLease",
    "RefitResult",
    "ServingPick",
    "beat_refit",
    "claim_refit",
    "finish_refit",
    "read_refit",
    "refit_artifact_ids",
    "refit_artifacts",
    "refit_trial_number",
    "release_refit",
    "served_refit",
    "serving_pick",
]
