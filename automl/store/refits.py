"""The refit of a study's best configuration on train + validation, claimed once.

A refit is asked for by ``refit: true`` in the spec (queued in the transaction that
completes the study, ``status.request_refit``) or later by ``queue_refit``. A worker claims
a queued refit of an ended study with a compare-and-set on its ``automl_refits`` row,
retrains the best trial's configuration (the store never imports training code), writes the
weights and model card to the artifact store, and hands the result back with
``finish_refit``: a compare-and-set on its claim that stores the result on the row and
mirrors it into the study's ``automl.refit`` attribute in the same transaction, so two
workers can never both store one. The worker beats (``beat_refit``) while it works; a claim
whose beats stopped for ``stale_after`` seconds (the claiming worker's grace period) is
taken over, at most ``MAX_TRIES`` times per request, then the refit ends ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from automl.spec_reading import check_readable
from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import remove_quietly
from automl.store.best_reads import RefitResult, done_result
from automl.store.jobs import (
    JOB_STALE_S,
    JobKind,
    Sightings,
    beat_job,
    claim_job,
    held,
    lost_claims,
    release_job,
)
from automl.store.status import ENDED, iso, lock_study, now
from automl.store.storage import Store
from automl.store.study_reads import spec_heads
from automl.store.tables import DELETING, RefitState

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
    stale_after: float = JOB_STALE_S,
    exclude: Collection[int] = (),
    check: Callable[[int, str], None] = check_readable,
    sightings: Sightings | None = None,
    confirm_after: float = 0.0,
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
    with store.read() as connection:
        number = refit_trial_number(connection, study.study_id, study.spec)
    return RefitLease(study.study_id, worker_id, attempt, number)


def lost_refits(
    store: Store, silent_for: float, study_id: int | None = None, exclude: Collection[int] = ()
) -> int:
    """How many refits (of ``study_id``, else of any study but those in ``exclude``) a
    worker holds without a beat for ``silent_for`` seconds (``lost_claims``)."""
    return lost_claims(store, _JOB, silent_for, study_id, exclude)


def beat_refit(store: Store, lease: RefitLease) -> bool:
    """Renews a claim while its worker trains; False if it is no longer held."""
    return beat_job(store, _JOB, lease.study_id, lease.attempt, lease.worker_id)


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
        result = None if row is None else done_result(row.state, row.result)
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
        directions = spec_heads(connection, study_id, row.spec)[0]
        if len(directions) != 1:
            return None
        best = optuna_rows.top_ranked(connection, study_id, directions[0] == "maximize", 1)
    if not best:
        return None
    trial_id, _, number = best[0]
    result = done_result(row.state, row.result)
    refit = result if result is not None and result.trial_number == number else None
    return ServingPick(trial_id, number, refit)


def refit_trial_number(connection: sa.engine.Connection, study_id: int, spec: str) -> int | None:
    """The trial a refit of the study retrains now: its best on its only objective (None
    with several objectives or no completed trial). ``spec`` is the stored spec JSON."""
    directions = spec_heads(connection, study_id, spec)[0]
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


__all__ = [
    "MAX_TRIES",
    "RefitLease",
    "ServingPick",
    "beat_refit",
    "claim_refit",
    "finish_refit",
    "lost_refits",
    "refit_artifact_ids",
    "refit_artifacts",
    "refit_trial_number",
    "release_refit",
    "served_refit",
    "serving_pick",
]
