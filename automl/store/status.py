"""Study status changes: compare-and-set on ``automl_studies``, mirrored into Optuna.

Every function here runs inside a write transaction the caller opened, after locking the
study's row with ``lock_study`` (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN
IMMEDIATE`` already serializes writers). Lock order everywhere: study row, then ticket
rows, then Optuna's trial rows, so concurrent transactions cannot deadlock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from automl.store import attrs, optuna_rows, tables
from automl.store.attrs import StudyStatus
from automl.store.tables import EvaluationState, RefitState, TicketState, db_now
from automl.wording import counted

ACTIVE = (StudyStatus.QUEUED.value, StudyStatus.RUNNING.value)
ENDED = (StudyStatus.COMPLETED.value, StudyStatus.CANCELLED.value, StudyStatus.FAILED.value)


def now(connection: sa.engine.Connection) -> float:
    """The database clock, in seconds since the epoch."""
    return float(connection.scalar(sa.select(db_now())))


def lock_study(connection: sa.engine.Connection, study_id: int) -> sa.Row[Any] | None:
    """The study's row, locked until the transaction ends (None if there is none, or if
    it is being deleted: gone for everyone but ``finish_deletion``)."""
    row = connection.execute(
        sa.select(tables.studies).where(tables.studies.c.study_id == study_id).with_for_update()
    ).first()
    return None if row is None or row.status == tables.DELETING else row


def iso(timestamp: float | None) -> str | None:
    """A database timestamp as ISO 8601 text (UTC)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def change_status(
    connection: sa.engine.Connection,
    study: sa.Row[Any],
    new: StudyStatus,
    reason: str | None,
    at: float,
    **columns: Any,
) -> bool:
    """Moves a study from the status in ``study`` to ``new`` (compare-and-set).

    Ending a study (completed, cancelled, failed) also cancels its pending tickets, so no
    queued work outlives it; completing it also makes its best trial(s) due for their one
    evaluation on the test split (``request_evaluation``) and, with ``refit: true`` in its
    spec, queues its refit (``request_refit``). The change is mirrored into the
    Optuna study's user attributes in the same transaction.

    Args:
        connection: An open write transaction that locked ``study``.
        study: The study's row as read (its ``status`` is the expected current one).
        new: The new status.
        reason: Why, for people (kept as ``status_reason``).
        at: The database time of the change.
        **columns: Further columns to set in the same update (``deadline``...).

    Returns:
        False if the status was no longer the expected one (nothing changed).
    """
    values: dict[str, Any] = {"status": new.value, "status_reason": reason, **columns}
    mirror: dict[str, Any] = {attrs.STATUS: new.value, attrs.STATUS_REASON: reason}
    if new == StudyStatus.RUNNING and study.started_at is None:
        values["started_at"] = at
        mirror[attrs.STARTED_AT] = iso(at)
    if new.is_active:
        values["finished_at"] = None
        if study.finished_at is not None:
            mirror[attrs.FINISHED_AT] = None
    else:
        values["finished_at"] = at
        mirror[attrs.FINISHED_AT] = iso(at)
    changed = connection.execute(
        tables.studies.update()
        .where(
            tables.studies.c.study_id == study.study_id,
            tables.studies.c.status == study.status,
        )
        .values(**values)
    )
    if changed.rowcount != 1:
        return False
    if not new.is_active:
        cancel_pending(connection, study.study_id)
    if new == StudyStatus.COMPLETED:
        mirror[attrs.TEST_EVALUATION] = request_evaluation(connection, study.study_id, at)
        if json.loads(study.spec).get("refit"):
            mirror[attrs.REFIT] = request_refit(connection, study.study_id, at)
    # The mirror is for optuna-dashboard; a study whose Optuna study was deleted with
    # another tool has nowhere to keep it (a foreign key error on PostgreSQL).
    if optuna_rows.optuna_study_exists(connection, study.study_id):
        optuna_rows.put_study_attrs(connection, study.study_id, mirror)
    return True


def request_evaluation(
    connection: sa.engine.Connection, study_id: int, at: float
) -> dict[str, Any]:
    """Makes the study's best trial(s) due for one evaluation on the test split.

    Runs in the transaction that completes the study (so once per completion); a claim
    still running from an earlier completion is superseded (its result is refused).

    Returns:
        The ``automl.test_evaluation`` study attribute to mirror.
    """
    evaluations = tables.evaluations
    due = {
        "state": EvaluationState.PENDING.value,
        "tries": 0,
        "worker_id": None,
        "claimed_at": None,
        "trials": None,
        "note": None,
        "requested_at": at,
        "finished_at": None,
    }
    changed = connection.execute(
        evaluations.update().where(evaluations.c.study_id == study_id).values(**due)
    )
    if changed.rowcount == 0:
        connection.execute(evaluations.insert().values(study_id=study_id, attempt=0, **due))
    return {"state": EvaluationState.PENDING.value}


def request_refit(connection: sa.engine.Connection, study_id: int, at: float) -> dict[str, Any]:
    """Queues the refit of the study's best configuration (see ``automl.store.refits``).

    A claim still running from an earlier request is superseded (its result is refused);
    the previous result stays served until a new one replaces it.

    Returns:
        The ``automl.refit`` study attribute to mirror.
    """
    refits = tables.refits
    due = {
        "state": RefitState.QUEUED.value,
        "tries": 0,
        "worker_id": None,
        "claimed_at": None,
        "note": None,
        "requested_at": at,
        "finished_at": None,
    }
    changed = connection.execute(refits.update().where(refits.c.study_id == study_id).values(**due))
    if changed.rowcount == 0:
        connection.execute(refits.insert().values(study_id=study_id, attempt=0, **due))
    return {"state": RefitState.QUEUED.value}


def cancel_pending(connection: sa.engine.Connection, study_id: int) -> int:
    """Cancels the study's pending tickets; returns how many."""
    tickets = tables.tickets
    result = connection.execute(
        tickets.update()
        .where(tickets.c.study_id == study_id, tickets.c.state == TicketState.PENDING.value)
        .values(state=TicketState.CANCELLED.value)
    )
    return result.rowcount


def count_errors(connection: sa.engine.Connection, study_id: int) -> int:
    """Tickets that ended because their configuration failed (toward ``max_failed``)."""
    tickets = tables.tickets
    return int(
        connection.scalar(
            sa.select(sa.func.count())
            .select_from(tickets)
            .where(
                tickets.c.study_id == study_id,
                tickets.c.failure == attrs.FailureKind.ERROR.value,
                tickets.c.state == TicketState.DONE.value,
            )
        )
        or 0
    )


def has_results(connection: sa.engine.Connection, study_id: int) -> bool:
    """Whether a ticket of the study ended with a result (complete or pruned)."""
    tickets = tables.tickets
    query = sa.select(
        sa.exists().where(
            tickets.c.study_id == study_id,
            tickets.c.state == TicketState.DONE.value,
            tickets.c.outcome.in_(["complete", "pruned"]),
        )
    )
    return bool(connection.scalar(query))


def has_tickets(connection: sa.engine.Connection, study_id: int, *states: TicketState) -> bool:
    """Whether the study has a ticket in one of ``states`` (an indexed EXISTS)."""
    tickets = tables.tickets
    query = sa.select(
        sa.exists().where(
            tickets.c.study_id == study_id, tickets.c.state.in_([s.value for s in states])
        )
    )
    return bool(connection.scalar(query))


def end_if_done_locked(
    connection: sa.engine.Connection, study: sa.Row[Any], at: float | None = None
) -> StudyStatus:
    """Ends an active study whose work is done, whose time ran out or that failed too often.

    Args:
        connection: An open write transaction that locked ``study``.
        study: The study's row.
        at: The database time (None: read only if needed, a statement fewer per call
            that changes nothing).

    Returns:
        The study's status afterwards.
    """
    status = StudyStatus(study.status)
    if not status.is_active:
        return status
    if at is None and study.deadline is not None:
        at = now(connection)
    errors = count_errors(connection, study.study_id)
    if errors > study.failure_limit:
        reason = f"{counted(errors, 'trial')} failed (max_failed is {study.max_failed})"
        new = StudyStatus.FAILED
    elif study.issued >= study.n_trials and not has_tickets(
        connection, study.study_id, TicketState.PENDING, TicketState.RUNNING
    ):
        if has_results(connection, study.study_id):
            reason, new = "all trials finished", StudyStatus.COMPLETED
        else:  # each failed (within max_failed) or lost its worker too often
            reason, new = "all trials finished, none with a result", StudyStatus.FAILED
    elif (
        study.deadline is not None
        and study.deadline <= at
        and not has_tickets(connection, study.study_id, TicketState.RUNNING)
    ):
        reason, new = "timeout reached", StudyStatus.COMPLETED
    else:
        return status
    at = now(connection) if at is None else at
    return new if change_status(connection, study, new, reason, at) else status
