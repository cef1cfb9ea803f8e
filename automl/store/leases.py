"""Claims and leases: how a worker takes one unit of a study's budget, exactly once.

A claim is one write transaction: it takes the oldest pending ticket of the next active
study (of the project with the fewest trials running, its oldest), or issues a fresh
budget unit (``issued = issued + 1 WHERE issued < n_trials``), and marks the ticket
running under a lease: (ticket, worker id, attempt). The worker then creates the
attempt's Optuna trial and links it to the ticket, in one transaction
(``trial_writes.create_trial`` with the lease).

Every later change a worker makes to its ticket (heartbeat, params, checkpoint, finish,
release) is a compare-and-set on the lease: zero rows changed means the lease was lost
(the reaper gave the ticket to someone else, or the study was deleted), and the worker
must stop. Nothing here loads a study's trials: every statement touches a few rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError

from automl.sampling import grid_cell
from automl.spec import StudySpec
from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import discard
from automl.store.attrs import FailureKind, StudyStatus
from automl.store.faults import is_transient
from automl.store.status import ACTIVE, change_status, end_if_done_locked, lock_study, now
from automl.store.storage import Store
from automl.store.tables import TicketSource, TicketState, db_now

logger = logging.getLogger("automl.store")

CLAIM_RACE_RETRIES = 5


Step = Callable[[sa.engine.Connection], None]
"""More work for a lease call's own transaction."""


class LeaseLostError(RuntimeError):
    """The worker no longer holds its ticket (reaped, or its study was deleted)."""


@dataclass(frozen=True)
class Lease:
    """A ticket held by one worker for one attempt.

    Attributes:
        ticket_id: The logical trial.
        study_id: Its study.
        worker_id: The holder.
        attempt: Which claim of the ticket this is (1 for the first).
        source: Who created the ticket (``sampler``, ``enqueued``).
        params: Params to use (from the user, or from an earlier attempt); None lets the
            sampler propose them.
        checkpoint: Artifact id of the last checkpoint of an earlier attempt, if any.
        checkpoint_epoch: Epochs that checkpoint covers.
        seed: The study's seed (of its samplers and training seeds).
        previous_trial: Number of the earlier attempt's Optuna trial, if any.
        exclusive: Run alone on the device: an earlier attempt ran out of memory beside
            other trials.
    """

    ticket_id: int
    study_id: int
    worker_id: str
    attempt: int
    source: str
    params: dict[str, Any] | None
    checkpoint: str | None
    checkpoint_epoch: int | None
    seed: int
    previous_trial: int | None = None
    exclusive: bool = False

    @property
    def key(self) -> str:
        """``ticket:attempt``, kept on the Optuna trial to find it from the ticket."""
        return f"{self.ticket_id}:{self.attempt}"


@dataclass(frozen=True)
class LeaseStatus:
    """What a heartbeat learned: is the lease still held, is the study still active, has
    another tool ended the attempt's trial (plain optuna-dashboard's "tell")."""

    held: bool
    study_active: bool
    trial_ended: bool = False


def params_for_fresh_ticket(spec: dict[str, Any], index: int) -> dict[str, Any] | None:
    """The fixed params of budget unit ``index`` of a study, if its sampler needs any.

    A grid study hands out a fixed list of configurations: unit k gets cell k, exactly
    once, because each unit is issued once. None lets the study's sampler propose the
    params when the trial starts.
    """
    if spec.get("sampler", {}).get("name") != "grid":
        return None
    return grid_cell(StudySpec.model_validate(spec), index)


def _drop_budget_past_the_grid(
    connection: sa.engine.Connection, study: sa.Row[Any], at: float
) -> None:
    """A grid study's budget past its cells (added before extend and resume refused it)
    can never run: it is dropped, so the study ends instead of failing every claim."""
    logger.warning(
        "study %s: a grid of %s cells cannot run %s trials; the budget past the grid is dropped",
        study.study_id,
        study.issued,
        study.n_trials,
    )
    connection.execute(
        tables.studies.update()
        .where(tables.studies.c.study_id == study.study_id)
        .values(n_trials=study.issued)
    )
    fresh = lock_study(connection, study.study_id)
    if fresh is not None:
        end_if_done_locked(connection, fresh, at)


def _lease_match(lease: Lease) -> sa.ColumnElement[bool]:
    tickets = tables.tickets
    return sa.and_(
        tickets.c.ticket_id == lease.ticket_id,
        tickets.c.worker_id == lease.worker_id,
        tickets.c.attempt == lease.attempt,
        tickets.c.state == TicketState.RUNNING.value,
    )


def claim(
    store: Store,
    worker_id: str,
    study_id: int | None = None,
    *,
    exclude: Collection[int] = (),
    one_at_a_time: bool = False,
) -> Lease | None:
    """Takes the next unit of work of an active study: of the project with the fewest
    trials running, its oldest study.

    Args:
        store: The store.
        worker_id: The claiming worker's unique id.
        study_id: Only claim from this study.
        exclude: Never claim from these studies (a worker that cannot read their specs).
        one_at_a_time: The worker holds one ticket at a time and claims with none in
            hand (a ``Worker`` does): a ticket running under its id is then one it
            claimed without hearing so, and it is that ticket's lease that is returned.

    Returns:
        The lease, or None when no active study has work left to hand out.
    """
    if one_at_a_time:
        unseen = _unseen_claim(store, worker_id, study_id, exclude)
        if unseen is not None:
            return unseen
    for _ in range(CLAIM_RACE_RETRIES):
        with store.write() as connection:
            study = _lock_next_study_with_work(connection, study_id, exclude)
            if study is None:
                return None
            lease = _claim_in(connection, study, worker_id)
            if lease is not None:
                return lease
    return None  # lost every race; the caller polls again


def _lock_next_study_with_work(
    connection: sa.engine.Connection, study_id: int | None, exclude: Collection[int] = ()
) -> sa.Row[Any] | None:
    """The next active study with work to hand out (none of ``exclude``), its row locked,
    with the database clock as ``clock``: of the project with the fewest trials running,
    its oldest (``projects_in_turn``)."""
    projects = [None] if study_id is not None else projects_in_turn(connection)
    for project in projects:
        # On PostgreSQL a row this had to wait for is checked again once its lock is
        # released: if it no longer qualifies, the next one is taken.
        query = _studies_with_work(study_id, exclude, project).add_columns(db_now().label("clock"))
        study = connection.execute(query.with_for_update(of=tables.studies)).first()
        if study is not None:
            return study
    return None


def projects_in_turn(connection: sa.engine.Connection) -> list[str | None]:
    """The projects with active studies in the order they get the next worker: fewest
    trials running first, then the one whose oldest active study is oldest. ``[None]``
    (no project filter) while one project or none has active studies.

    Projects share the workers: one project's long queue delays another project's study
    only until each has trials running (oldest study first was starvation: a study of
    100,000 trials held every worker for days). Within a project, studies run in order.
    Both queries read a few rows from indexes (active studies by status, running tickets
    by state), however many tickets the studies have.
    """
    studies, tickets = tables.studies, tables.tickets
    oldest = dict(
        connection.execute(
            sa.select(studies.c.project, sa.func.min(studies.c.study_id))
            .where(studies.c.status.in_(ACTIVE))
            .group_by(studies.c.project)
        ).all()
    )
    if len(oldest) <= 1:
        return [None]
    running = dict(
        connection.execute(
            sa.select(studies.c.project, sa.func.count())
            .select_from(tickets.join(studies, tickets.c.study_id == studies.c.study_id))
            .where(tickets.c.state == TicketState.RUNNING.value)
            .group_by(studies.c.project)
        ).all()
    )
    return sorted(oldest, key=lambda project: (running.get(project, 0), oldest[project]))


def _studies_with_work(
    study_id: int | None, exclude: Collection[int] = (), project: str | None = None
) -> sa.Select[Any]:
    """Active studies with work left to hand out (none of ``exclude``; of ``project`` if
    given), oldest first, the first one only."""
    studies, tickets = tables.studies, tables.tickets
    pending = sa.exists().where(
        tickets.c.study_id == studies.c.study_id, tickets.c.state == TicketState.PENDING.value
    )
    query = (
        sa.select(studies)
        .where(
            studies.c.status.in_(ACTIVE),
            sa.or_(studies.c.deadline.is_(None), studies.c.deadline > db_now()),
            sa.or_(studies.c.issued < studies.c.n_trials, pending),
        )
        .order_by(studies.c.study_id)
        .limit(1)
    )
    if study_id is not None:
        query = query.where(studies.c.study_id == study_id)
    if project is not None:
        query = query.where(studies.c.project == project)
    if exclude:
        query = query.where(studies.c.study_id.not_in(sorted(exclude)))
    return query


def next_pending_ticket(study_id: int) -> sa.Select[tuple[int]]:
    """The id of the study's pending ticket to hand out next (highest priority, then
    oldest), locked; one a concurrent claimer holds is skipped.

    Read in order from ``ix_automl_tickets_claim``: no sort, however many are pending.
    """
    tickets = tables.tickets
    return (
        sa.select(tickets.c.ticket_id)
        .where(tickets.c.study_id == study_id, tickets.c.state == TicketState.PENDING.value)
        .order_by(tickets.c.priority.desc(), tickets.c.ticket_id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def _unseen_claim(
    store: Store, worker_id: str, study_id: int | None, exclude: Collection[int]
) -> Lease | None:
    """The ticket this worker claimed without hearing so, if any, its heartbeat renewed.

    For a worker that holds one ticket at a time and claims only with none in hand: a
    ticket running under its id whose attempt started no trial is one whose claim committed
    while the answer was lost (a connection cut after ``COMMIT``). Claimed again, it would
    have stayed running unseen until the reaper took it for a lost worker's: a retry used
    up, or the configuration failed unrun (a tester saw 7 of 20 trials end so at 15% lost
    answers). A ticket whose attempt started a trial is not one of those (its worker gave
    it up and could not say so): the reaper ends that trial and requeues the ticket.

    The candidates are read unlocked, then the study's row and the ticket's are locked in
    that order, as the reaper, releases and deletions lock them.
    """
    tickets = tables.tickets
    query = sa.select(tickets).where(
        tickets.c.state == TicketState.RUNNING.value, tickets.c.worker_id == worker_id
    )
    if study_id is not None:
        query = query.where(tickets.c.study_id == study_id)
    if exclude:
        query = query.where(tickets.c.study_id.not_in(list(exclude)))
    with store.read() as connection:
        candidates = connection.execute(query.order_by(tickets.c.ticket_id.desc())).all()
    for candidate in candidates:
        with store.write() as connection:
            study = lock_study(connection, candidate.study_id)
            row = connection.execute(
                sa.select(tickets)
                .where(
                    tickets.c.ticket_id == candidate.ticket_id,
                    tickets.c.attempt == candidate.attempt,
                    tickets.c.worker_id == worker_id,
                    tickets.c.state == TicketState.RUNNING.value,
                )
                .with_for_update()
            ).first()
            if study is None or row is None or _attempt_started(connection, row):
                continue
            connection.execute(
                tickets.update()
                .where(tickets.c.ticket_id == row.ticket_id)
                .values(heartbeat_at=db_now())
            )
            logger.warning(
                "worker %s: the answer to its claim of ticket %s was lost; taking that ticket",
                worker_id,
                row.ticket_id,
            )
            return _lease(row, worker_id, study.seed)
    return None


def _attempt_started(connection: sa.engine.Connection, ticket: sa.Row[Any]) -> bool:
    """Whether the ticket's current attempt created its Optuna trial (linked to the ticket
    or not yet)."""
    key = f"{ticket.ticket_id}:{ticket.attempt}"
    return attempt_trial(connection, ticket, key) is not None or bool(
        optuna_rows.running_trials_with_attr(connection, ticket.study_id, attrs.LEASE, key)
    )


def _lease(row: sa.Row[Any], worker_id: str, seed: int) -> Lease:
    """The lease of a claimed ticket's row."""
    return Lease(
        ticket_id=row.ticket_id,
        study_id=row.study_id,
        worker_id=worker_id,
        attempt=row.attempt,
        source=row.source,
        params=None if row.params is None else json.loads(row.params),
        checkpoint=row.checkpoint,
        checkpoint_epoch=row.checkpoint_epoch,
        seed=seed,
        previous_trial=row.trial_number,
        exclusive=bool(row.exclusive),
    )


def _claim_in(connection: sa.engine.Connection, study: sa.Row[Any], worker_id: str) -> Lease | None:
    """Claims a ticket of ``study`` (locked by the caller, with its ``clock``)."""
    tickets = tables.tickets
    study_id, at = study.study_id, float(study.clock)
    if study.status not in ACTIVE:
        return None
    if study.deadline is not None and study.deadline <= at:
        return None
    running = {
        "state": TicketState.RUNNING.value,
        "worker_id": worker_id,
        "heartbeat_at": at,
        "attempt": tickets.c.attempt + 1,
    }
    pending_id = connection.scalar(next_pending_ticket(study_id))
    if pending_id is not None:
        row = connection.execute(
            tickets.update()
            .where(tickets.c.ticket_id == pending_id, tickets.c.state == TicketState.PENDING.value)
            .values(**running)
            .returning(tickets)
        ).first()
    elif study.issued < study.n_trials:
        try:
            params = params_for_fresh_ticket(json.loads(study.spec), study.issued)
        except IndexError:
            _drop_budget_past_the_grid(connection, study, at)
            return None
        issued = connection.execute(
            tables.studies.update()
            .where(
                tables.studies.c.study_id == study_id,
                tables.studies.c.issued < tables.studies.c.n_trials,
            )
            .values(issued=tables.studies.c.issued + 1)
        )
        if issued.rowcount != 1:
            return None
        row = connection.execute(
            tickets.insert()
            .values(
                study_id=study_id,
                source=(TicketSource.SAMPLER if params is None else TicketSource.GRID).value,
                params=None if params is None else json.dumps(params),
                created_at=at,
                **{**running, "attempt": 1},
            )
            .returning(tickets)
        ).first()
    else:
        return None
    if row is None:
        return None
    if study.status == StudyStatus.QUEUED.value:
        deadline = None if study.timeout is None else at + study.timeout
        change_status(connection, study, StudyStatus.RUNNING, None, at, deadline=deadline)
    return _lease(row, worker_id, study.seed)


def record_trial(store: Store, lease: Lease, trial_id: int, number: int) -> None:
    """Records which Optuna trial runs the lease's attempt.

    Raises:
        LeaseLostError: If the lease is no longer held.
    """
    _update_held(store, lease, trial_id=trial_id, trial_number=number)


def record_trial_in(
    connection: sa.engine.Connection, lease: Lease, trial_id: int, number: int
) -> None:
    """``record_trial`` in the caller's transaction."""
    _set_held(connection, lease, trial_id=trial_id, trial_number=number)


def record_params(
    store: Store, lease: Lease, params: dict[str, Any], then: Step | None = None
) -> None:
    """Keeps the attempt's params, so a retry after a lost worker runs the same ones.

    Args:
        store: The store.
        lease: The lease.
        params: The attempt's params.
        then: Runs next in the same transaction (the trial's own writes of them), after
            the ticket's row: tickets before trials, the order the reaper locks them in.

    Raises:
        LeaseLostError: If the lease is no longer held (nothing is written).
    """
    _update_held(store, lease, then, params=json.dumps(params))


def record_results(store: Store, trial_id: int, user_attrs: dict[str, Any]) -> None:
    """Sets a running trial's result attributes (metrics, history, reports) in one transaction.

    One write instead of one per attribute (each of Optuna's ``set_user_attr`` calls is
    its own transaction): it is most of a short trial's store time.

    Raises:
        UpdateFinishedTrialError: If the trial already ended (a reaper failed it), as
            Optuna's ``set_user_attr`` would.
    """
    with store.write() as connection:
        if not optuna_rows.put_running_trial_attrs(connection, trial_id, user_attrs):
            raise UpdateFinishedTrialError(f"trial id {trial_id} is no longer running")


def record_checkpoint(store: Store, lease: Lease, artifact_id: str, epoch: int) -> str | None:
    """Points the ticket at a new, completely written checkpoint.

    Returns:
        The previous checkpoint's artifact id (now unreferenced: delete it), if any.

    Raises:
        LeaseLostError: If the lease is no longer held (the new checkpoint is then
            unreferenced: delete it).
    """
    tickets = tables.tickets
    with store.write() as connection:
        previous = connection.execute(
            sa.select(tickets.c.checkpoint).where(_lease_match(lease)).with_for_update()
        ).first()
        if previous is None:
            raise LeaseLostError(f"ticket {lease.ticket_id} attempt {lease.attempt} lost")
        _set_held(connection, lease, checkpoint=artifact_id, checkpoint_epoch=epoch)
    return previous.checkpoint


def _update_held(store: Store, lease: Lease, then: Step | None = None, **values: Any) -> None:
    with store.write() as connection:
        _set_held(connection, lease, **values)
        if then is not None:
            then(connection)


def _set_held(connection: sa.engine.Connection, lease: Lease, **values: Any) -> None:
    changed = connection.execute(
        tables.tickets.update().where(_lease_match(lease)).values(**values)
    )
    if changed.rowcount != 1:
        raise LeaseLostError(f"ticket {lease.ticket_id} attempt {lease.attempt} lost")


def heartbeat(store: Store, lease: Lease, then: Step | None = None) -> LeaseStatus:
    """Records that the lease's worker is alive; reports whether to keep going.

    Args:
        store: The store.
        lease: The lease.
        then: Runs in the same transaction if the lease is held (the running trial's
            buffered writes), in a savepoint: if it fails, the beat still counts and its
            error is raised after the commit; a database fault fails the whole beat.
    """
    failure: Exception | None = None
    with store.write() as connection:
        beat = connection.execute(
            tables.tickets.update().where(_lease_match(lease)).values(heartbeat_at=db_now())
        )
        status = connection.scalar(
            sa.select(tables.studies.c.status).where(tables.studies.c.study_id == lease.study_id)
        )
        if beat.rowcount == 1 and then is not None:
            try:
                with connection.begin_nested():
                    then(connection)
            except Exception as exc:
                if connection.invalidated or is_transient(exc):
                    # Gone with the whole transaction (or going): retry it all. An error
                    # that persists stops the beats, and the reaper ends the trial.
                    raise
                failure = exc
        ended = beat.rowcount == 1 and _attempt_trial_ended(connection, lease)
    if failure is not None:
        raise failure
    return LeaseStatus(held=beat.rowcount == 1, study_active=status in ACTIVE, trial_ended=ended)


def _attempt_trial_ended(connection: sa.engine.Connection, lease: Lease) -> bool:
    """Whether the held attempt's Optuna trial, once linked to its ticket, has ended: only
    its worker ends it while the lease is held, so another tool did (one query)."""
    trials, user_attrs = optuna_rows.trials, optuna_rows.trial_user_attributes
    row = connection.execute(
        sa.select(trials.c.state, user_attrs.c.value_json)
        .select_from(tables.tickets)
        .join(trials, trials.c.trial_id == tables.tickets.c.trial_id)
        .join(
            user_attrs,
            sa.and_(user_attrs.c.trial_id == trials.c.trial_id, user_attrs.c.key == attrs.LEASE),
        )
        .where(tables.tickets.c.ticket_id == lease.ticket_id)
    ).first()
    # A retried ticket names the earlier attempt's trial until the new one is linked.
    return row is not None and json.loads(row.value_json) == lease.key and row.state.is_finished()


def finish(
    store: Store, lease: Lease, outcome: str, failure: FailureKind | None = None
) -> str | None:
    """Ends the lease's ticket after its Optuna trial was told ``outcome``.

    Safe to repeat: if the ticket already ended this way under this lease (the first try
    committed but its answer was lost), it succeeds again.

    Args:
        store: The store.
        lease: The lease.
        outcome: ``complete``, ``pruned`` or ``fail``.
        failure: Why it failed (``fail`` only).

    Returns:
        The ticket's checkpoint artifact id (no longer needed: delete it), if any.

    Raises:
        LeaseLostError: If the lease was lost before the ticket ended.
    """
    with store.write() as connection:
        return _finish_ticket(connection, lease, outcome, failure)


def finish_and_settle(
    store: Store, lease: Lease, outcome: str, failure: FailureKind | None = None
) -> tuple[str | None, StudyStatus | None]:
    """``finish``, then ``end_if_done`` of the lease's study, in one transaction (the
    study's row locked first, the reaper's order). Safe to repeat, as ``finish``.

    Returns:
        The ticket's checkpoint artifact id (delete it), if any, and the study's status
        afterwards (None if the study is gone).

    Raises:
        LeaseLostError: If the lease was lost before the ticket ended.
    """
    with store.write() as connection:
        study = lock_study(connection, lease.study_id)
        checkpoint = _finish_ticket(connection, lease, outcome, failure)
        if study is None:
            return checkpoint, None
        return checkpoint, end_if_done_locked(connection, study)


def _finish_ticket(
    connection: sa.engine.Connection, lease: Lease, outcome: str, failure: FailureKind | None
) -> str | None:
    """``finish`` in the caller's transaction."""
    tickets = tables.tickets
    row = connection.execute(
        sa.select(tickets.c.checkpoint, tickets.c.state, tickets.c.outcome).where(
            tickets.c.ticket_id == lease.ticket_id,
            tickets.c.worker_id == lease.worker_id,
            tickets.c.attempt == lease.attempt,
        )
    ).first()
    if row is not None and row.state == TicketState.DONE.value and row.outcome == outcome:
        return None  # a repeated call
    changed = connection.execute(
        tickets.update()
        .where(_lease_match(lease))
        .values(
            state=TicketState.DONE.value,
            outcome=outcome,
            failure=None if failure is None else failure.value,
            checkpoint=None,
            checkpoint_epoch=None,
        )
    )
    if changed.rowcount != 1:
        raise LeaseLostError(f"ticket {lease.ticket_id} attempt {lease.attempt} lost")
    return None if row is None else row.checkpoint


def release(
    store: Store, lease: Lease, failure: FailureKind, error: str, *, requeue: bool = True
) -> bool:
    """Gives the ticket back without using a retry: its attempt ends FAIL (``failure``).

    With ``requeue`` the ticket goes back to the queue (with its params and checkpoint)
    if the study is still active, else it is cancelled (``resume`` re-queues it); given
    back for running out of memory, it is marked to run alone next time; without,
    the ticket ends failed (for attempts that could not even start). The attempt's Optuna
    trial, found from the ticket or by the lease key when the worker could not record
    it, is failed in the same transaction.

    Returns:
        False if the lease was already lost (the reaper handled it).
    """
    tickets = tables.tickets
    drop = None
    with store.write() as connection:
        study = lock_study(connection, lease.study_id)
        ticket = connection.execute(
            sa.select(tickets).where(_lease_match(lease)).with_for_update()
        ).first()
        if ticket is None or study is None:
            return False
        fail_attempt_trials(connection, ticket, lease.key, failure, error)
        values: dict[str, Any] = {"worker_id": None, "heartbeat_at": None}
        if not requeue:
            values.update(state=TicketState.DONE.value, outcome="fail", failure=failure.value)
            values.update(checkpoint=None, checkpoint_epoch=None)
            drop = ticket.checkpoint
        elif study.status in ACTIVE:
            values["state"] = TicketState.PENDING.value
            if failure == FailureKind.OUT_OF_MEMORY:
                values["exclusive"] = True
        else:
            values["state"] = TicketState.CANCELLED.value
        connection.execute(
            tickets.update().where(tickets.c.ticket_id == ticket.ticket_id).values(**values)
        )
    if drop is not None:
        discard(store.artifacts, drop)
    return True


def attempt_trial(
    connection: sa.engine.Connection, ticket: sa.Row[Any], lease_key: str
) -> int | None:
    """The trial the ticket names, if it is the one of the attempt ``lease_key`` (a
    retried ticket names the earlier attempt's trial until the new one is linked)."""
    if ticket.trial_id is None:
        return None
    if optuna_rows.trial_attr(connection, ticket.trial_id, attrs.LEASE) != lease_key:
        return None
    return int(ticket.trial_id)


def fail_attempt_trials(
    connection: sa.engine.Connection,
    ticket: sa.Row[Any],
    lease_key: str,
    failure: FailureKind,
    error: str,
) -> list[int]:
    """Fails the RUNNING Optuna trial(s) of a ticket's current attempt; returns their ids.

    The ticket names its attempt's trial once the worker linked it; until then it may
    still name an earlier attempt's, so the trials that carry the lease's key count too.
    """
    linked = attempt_trial(connection, ticket, lease_key)
    if linked is not None:
        candidates = [linked]
    else:
        candidates = optuna_rows.running_trials_with_attr(
            connection, ticket.study_id, attrs.LEASE, lease_key
        )
    user_attrs = {attrs.FAILURE: failure.value, attrs.ERROR: error}
    return [t for t in candidates if optuna_rows.fail_running_trial(connection, t, user_attrs)]


def end_if_done(store: Store, study_id: int) -> StudyStatus | None:
    """Ends the study if its work is done (see ``status.end_if_done_locked``).

    Returns:
        Its status afterwards, or None if there is no such study.
    """
    with store.write() as connection:
        study = lock_study(connection, study_id)
        if study is None:
            return None
        return end_if_done_locked(connection, study, now(connection))
