"""The reaper: finds trials whose worker stopped beating and gives their work back.

It runs in the API process and in every worker, on a timer; several at once are safe,
because each reaped ticket is one transaction that re-checks (under the study's row lock)
that the ticket is still held by the same attempt and still stale. For each one it:

1. fails the attempt's Optuna trial if it is still RUNNING (``worker_lost``), or, when the
   worker told Optuna the result and died before ending its ticket, ends the ticket with
   that result instead;
2. re-queues the ticket with the same params and its checkpoint (at most ``max_retries``
   times; then the ticket ends failed), or cancels it if the study has ended;
3. settles the study.

A reaper that just (re)gained the database waits one grace period before reaping, so the
workers, cut off by the same outage, get the chance to beat again first. An outage that
only stalled the reaper (a silent network cut holds its query until the network heals,
with no error) counts too: a pass whose reaping waited on the database for longer than
half the grace period reaps nothing, and the next grace period of normal passes is waited
out, for the workers' beats were held up by the same stall and their tickets only look
stale.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState

from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import discard
from automl.store.attrs import FailureKind
from automl.store.faults import StorageUnavailableError, first_line, is_transient
from automl.store.leases import attempt_trial, fail_attempt_trials
from automl.store.orphan_artifacts import remove_orphan_artifacts
from automl.store.status import ACTIVE, end_if_done_locked, lock_study, now
from automl.store.storage import Store
from automl.store.tables import DELETING, TicketState

logger = logging.getLogger("automl.reaper")

ORPHAN_AGE_S = 600.0
"""A study half-created by a crashed submit is removed once it is this old."""

ORPHAN_SWEEP_INTERVAL_S = ORPHAN_AGE_S / 2
"""How often a reaper looks for half-created studies: that reads every study's attributes
(Optuna indexes them by study, not by key), too much for every pass of every worker. A
half-created study goes 10 to 15 minutes after its submit died; a deletion that a crash
interrupted is completed at the next pass."""

TEMPORARY_SWEEP_INTERVAL_S = 3600.0
"""How often a reaper removes the temporary files of killed artifact writes."""

ORPHAN_ARTIFACT_SWEEP_INTERVAL_S = 6 * 3600.0
"""How often a reaper removes the artifacts nothing refers to (``remove_orphan_artifacts``
reads every reference in the store); its first sweep comes at a random moment of its
first hour, so that a fleet started at once does not sweep at once."""

ORPHAN_ARTIFACT_RETRY_S = 600.0
"""When a sweep that a storage fault cut short is tried again."""

RELEASED_FAILURES = (FailureKind.INTERRUPTED.value, FailureKind.CANCELLED.value)

MAX_STALL_SHARE = 0.5
"""A ``Reaper`` pass that waited on the database for longer than this share of the grace
period reaps nothing (see the module doc). Half: heartbeats come more than twice per grace
period (``Settings`` checks it), so a stall shorter than half of it cannot by itself make
a live worker's ticket look stale."""


class StorageStalledError(StorageUnavailableError):
    """The database took longer to answer than the reaping allows (``max_stall``).

    Attributes:
        waited: Seconds the reaping went without an answer.
    """

    def __init__(self, waited: float) -> None:
        super().__init__(f"the database did not answer for {waited:.1f} s: reaping nothing")
        self.waited = waited


class _StallClock:
    """Time since the reaping last heard from the database, on a monotonic clock."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.since = time.monotonic()

    def restart(self) -> None:
        """Starts counting again (the database just answered)."""
        self.since = time.monotonic()

    def check(self) -> None:
        """Raises ``StorageStalledError`` if the wait since the last restart exceeds the
        limit."""
        waited = time.monotonic() - self.since
        if self.limit is not None and waited > self.limit:
            raise StorageStalledError(waited)


@dataclass(frozen=True)
class Reaped:
    """One ticket the reaper took back.

    Attributes:
        ticket_id: The ticket.
        study_id: Its study.
        worker_id: The worker that lost it.
        failed_trials: Optuna trials moved RUNNING -> FAIL (``worker_lost``).
        result: ``requeued``, ``exhausted`` (retries used up: ended failed), ``finished``
            (the worker had told Optuna its result) or ``cancelled`` (study ended).
    """

    ticket_id: int
    study_id: int
    worker_id: str | None
    failed_trials: tuple[int, ...]
    result: str


Sightings = dict[tuple[int, int], tuple[float, float]]
"""Stale tickets that passes found: (ticket, attempt) -> its last heartbeat, and when (on
this process's monotonic clock) a pass first found it stale with that beat."""


def reap_stale(
    store: Store,
    grace: float,
    spare: str | None = None,
    *,
    max_stall: float | None = None,
    sightings: Sightings | None = None,
    confirm_after: float = 0.0,
) -> list[Reaped]:
    """Takes back every running ticket whose heartbeat is older than ``grace`` seconds.

    Args:
        store: The store.
        grace: Seconds without a heartbeat after which a ticket's worker counts as lost.
        spare: A worker whose tickets are not reaped: the one running this reaper, while
            it claims or runs a trial. It is alive, so a late beat means the database was
            slow (a long SQLite lock delays the beat as much as the reaper), not that the
            worker was lost; a ticket it left behind is reaped once it is idle.
        max_stall: Longest wait for the database, from the start and from each reap to
            the next, after which no ticket is reaped: the workers' beats waited as long,
            so their tickets may only look stale. None: no limit.
        sightings: What earlier passes found stale: a ticket is reaped only if a pass
            found it stale with the same last beat at least ``confirm_after`` seconds
            ago; updated to what this pass finds. A beat that the database held up (a
            long SQLite write lock holds up the beats and then the reaper, which may
            find the lock only near its end) lands meanwhile: a worker whose beat failed
            beats again after its heartbeat interval. None: every stale ticket is reaped
            at once.
        confirm_after: See ``sightings``.

    Raises:
        StorageStalledError: If a wait exceeded ``max_stall`` (the ticket whose reaping
            waited is left as it was; those reaped before stay reaped).
    """
    clock = _StallClock(max_stall)
    tickets = tables.tickets
    query = sa.select(
        tickets.c.ticket_id, tickets.c.study_id, tickets.c.attempt, tickets.c.heartbeat_at
    )
    if spare is not None:
        query = query.where(sa.or_(tickets.c.worker_id.is_(None), tickets.c.worker_id != spare))
    with store.read() as connection:
        cutoff = now(connection) - grace
        stale = connection.execute(
            query.where(
                tickets.c.state == TicketState.RUNNING.value, tickets.c.heartbeat_at < cutoff
            )
        ).all()
    clock.check()
    if sightings is not None:
        stale = _confirmed(stale, sightings, confirm_after)
    reaped = []
    for ticket_id, study_id, attempt, _ in stale:
        result = _reap_one(store, ticket_id, study_id, attempt, grace, clock)
        if result is not None:
            reaped.append(result)
            logger.warning(
                "reaped trial(s) %s of study %s (ticket %s, worker %s): %s",
                _numbers(store, result.failed_trials),
                study_id,
                ticket_id,
                result.worker_id,
                result.result,
            )
    return reaped


def lost_tickets(store: Store, silent_for: float, study_id: int | None = None) -> int:
    """How many running tickets (of ``study_id``, else of any study not being deleted)
    have gone without a heartbeat for ``silent_for`` seconds: a lost worker's, which a
    reaper takes back once they are silent for the grace period."""
    tickets, studies = tables.tickets, tables.studies
    query = (
        sa.select(sa.func.count())
        .select_from(tickets.join(studies, studies.c.study_id == tickets.c.study_id))
        .where(tickets.c.state == TicketState.RUNNING.value, studies.c.status != DELETING)
    )
    if study_id is not None:
        query = query.where(tickets.c.study_id == study_id)
    with store.read() as connection:
        cutoff = now(connection) - silent_for
        return int(connection.scalar(query.where(tickets.c.heartbeat_at < cutoff)) or 0)


def _confirmed(
    stale: Sequence[sa.Row[Any]], sightings: Sightings, confirm_after: float
) -> list[sa.Row[Any]]:
    """The stale tickets first found with the same beat ``confirm_after`` seconds ago or
    more; ``sightings`` becomes what this pass found."""
    now_s = time.monotonic()
    found: Sightings = {}
    confirmed = []
    for row in stale:
        key = (row.ticket_id, row.attempt)
        beat, since = sightings.get(key, (None, now_s))
        if beat != row.heartbeat_at:
            since = now_s
        found[key] = (row.heartbeat_at, since)
        if now_s - since >= confirm_after and beat == row.heartbeat_at:
            confirmed.append(row)
    sightings.clear()
    sightings.update(found)
    return confirmed


def _numbers(store: Store, trial_ids: tuple[int, ...]) -> list[int | None]:
    """The trials' numbers in their study (what ``automl trials`` shows), for the log."""
    if not trial_ids:
        return []
    try:
        with store.read() as connection:
            return [optuna_rows.trial_number(connection, trial_id) for trial_id in trial_ids]
    except Exception as exc:  # the reaping is done: the log must not stop the pass
        logger.info("trial numbers unknown (%s): trial ids %s", first_line(exc), trial_ids)
        return [None] * len(trial_ids)


def _reap_one(
    store: Store, ticket_id: int, study_id: int, attempt: int, grace: float, clock: _StallClock
) -> Reaped | None:
    tickets = tables.tickets
    drop_checkpoint = None
    with store.write() as connection:
        at = now(connection)
        study = lock_study(connection, study_id)
        ticket = connection.execute(
            sa.select(tickets)
            .where(
                tickets.c.ticket_id == ticket_id,
                tickets.c.attempt == attempt,
                tickets.c.state == TicketState.RUNNING.value,
                tickets.c.heartbeat_at < at - grace,
            )
            .with_for_update()
        ).first()
        if ticket is None or study is None:
            return None
        clock.check()  # raised inside the transaction: it rolls back
        silent = at - ticket.heartbeat_at
        error = f"worker {ticket.worker_id} lost: no heartbeat for {silent:.0f} s"
        lease_key = f"{ticket.ticket_id}:{ticket.attempt}"
        failed = fail_attempt_trials(connection, ticket, lease_key, FailureKind.WORKER_LOST, error)
        values: dict[str, Any] = {"worker_id": None, "heartbeat_at": None}
        told = _told_state(connection, ticket, lease_key) if not failed else None
        active = study.status in ACTIVE
        if told is not None and told[2] not in RELEASED_FAILURES:
            state, outcome, failure = told
            values.update(state=TicketState.DONE.value, outcome=outcome, failure=failure)
            values.update(checkpoint=None, checkpoint_epoch=None)
            drop_checkpoint, result = ticket.checkpoint, "finished"
        elif told is not None or not active:
            # Released by its worker (interrupted) but not yet given back, or study ended.
            state = TicketState.PENDING.value if active else TicketState.CANCELLED.value
            values["state"] = state
            result = "requeued" if active else "cancelled"
        elif ticket.retries < study.max_retries:
            values.update(state=TicketState.PENDING.value, retries=ticket.retries + 1)
            result = "requeued"
        else:
            values.update(
                state=TicketState.DONE.value,
                outcome="fail",
                failure=FailureKind.WORKER_LOST.value,
                checkpoint=None,
                checkpoint_epoch=None,
            )
            drop_checkpoint, result = ticket.checkpoint, "exhausted"
        connection.execute(
            tickets.update().where(tickets.c.ticket_id == ticket.ticket_id).values(**values)
        )
        end_if_done_locked(connection, study, at)
    clock.restart()
    if drop_checkpoint is not None:
        discard(store.artifacts, drop_checkpoint)
    return Reaped(ticket_id, study_id, ticket.worker_id, tuple(failed), result)


def _told_state(
    connection: sa.engine.Connection, ticket: Any, lease_key: str
) -> tuple[str, Any, Any] | None:
    """(state, outcome, failure) of a ticket whose current attempt's trial its worker
    already ended (the ticket may still name an earlier attempt's trial: not that one)."""
    if attempt_trial(connection, ticket, lease_key) is None:
        return None
    state = optuna_rows.trial_state(connection, ticket.trial_id)
    if state is None or not state.is_finished():
        return None
    failure = None
    if state == TrialState.FAIL:
        failure = optuna_rows.trial_attr(connection, ticket.trial_id, attrs.FAILURE) or "error"
    return TicketState.DONE.value, state.name.lower(), failure


def end_due_studies(store: Store) -> list[int]:
    """Settles active studies that are due: time ran out, or no work is left.

    Returns:
        Ids of the studies that ended.
    """
    studies, tickets = tables.studies, tables.tickets
    busy = sa.exists().where(
        tickets.c.study_id == studies.c.study_id,
        tickets.c.state.in_([TicketState.PENDING.value, TicketState.RUNNING.value]),
    )
    with store.read() as connection:
        at = now(connection)
        due = connection.scalars(
            sa.select(studies.c.study_id).where(
                studies.c.status.in_(ACTIVE),
                sa.or_(
                    studies.c.deadline <= at,
                    sa.and_(studies.c.issued >= studies.c.n_trials, ~busy),
                ),
            )
        ).all()
    ended = []
    for study_id in due:
        with store.write() as connection:
            study = lock_study(connection, study_id)
            if study is None:
                continue
            if not end_if_done_locked(connection, study, now(connection)).is_active:
                ended.append(study_id)
    return ended


def remove_orphans(
    store: Store, min_age_s: float = ORPHAN_AGE_S, *, sweep_half_created: bool = True
) -> list[int]:
    """Removes what crashed submits and deletes left behind.

    - With ``sweep_half_created``, an Optuna study created by a submit that never finished (it
      has automl's ``created_at`` attribute but no ``automl_studies`` row, no trial and
      no other attribute of automl's: ``optuna_rows.half_created_studies``) and is older
      than ``min_age_s``: deleted, which frees its name. A copy or a renamed study that
      another tool made of an automl study is never one.
    - A study left in the internal ``deleting`` status: its deletion is completed (one
      indexed read finds them).

    Returns:
        Ids of the studies removed.
    """
    from automl.store.studies import finish_deletion

    with store.read() as connection:
        known = sa.select(tables.studies.c.study_id)
        half_created = (
            optuna_rows.half_created_studies(connection, known) if sweep_half_created else {}
        )
        deleting = connection.scalars(
            sa.select(tables.studies.c.study_id).where(tables.studies.c.status == DELETING)
        ).all()
        clock = now(connection) if half_created else 0.0  # the clock submissions stamp by
    removed = []
    for study_id, created_at in half_created.items():
        try:
            age = clock - datetime.fromisoformat(created_at).timestamp()
        except (TypeError, ValueError):
            continue  # a mark another tool wrote: no submit of automl's left it
        if age >= min_age_s and _remove_if_still_half_created(store, study_id, known):
            removed.append(study_id)
    for study_id in deleting:
        try:
            if not finish_deletion(store, study_id):
                continue  # still written to: the next pass goes on
        except Exception as exc:
            if is_transient(exc):
                raise
            # One study whose artifacts cannot be removed must not hold up the others.
            logger.warning("study %s: deletion not completed: %s", study_id, first_line(exc))
            continue
        removed.append(study_id)
    return removed


def _remove_if_still_half_created(store: Store, study_id: int, known: sa.Select[Any]) -> bool:
    """Deletes a half-created Optuna study found earlier, if it still is one (a slow
    submit may have written its row since, or another reaper removed it); whether it did."""
    with store.write() as connection:
        optuna_rows.lock_study_row(connection, study_id)
        if not optuna_rows.half_created_studies(connection, known, among=[study_id]):
            return False
        optuna_rows.delete_study(connection, study_id)
    return True


def remove_stale_temporaries(store: Store) -> list[str]:
    """Removes the temporary files that killed writes left in a folder artifact store
    (other stores write all-or-nothing and leave none).

    Returns:
        The names of the files removed.
    """
    sweep = getattr(store.artifacts, "remove_stale_temporaries", None)
    if sweep is None:
        return []
    try:
        removed = sweep()
    except OSError as exc:
        logger.warning("could not remove stale temporary artifact files: %s", exc)
        return []
    if removed:
        logger.info("removed %d temporary artifact files left by killed writes", len(removed))
    return removed


class Reaper:
    """Runs ``reap_stale``, ``end_due_studies`` and ``remove_orphans`` every ``interval``
    seconds (its sweep for half-created studies on the first pass and then every
    ``ORPHAN_SWEEP_INTERVAL_S``), ``remove_stale_temporaries`` on the first pass and
    then every ``TEMPORARY_SWEEP_INTERVAL_S``, and ``remove_orphan_artifacts`` within the
    first hour and then every ``ORPHAN_ARTIFACT_SWEEP_INTERVAL_S``.

    It reaps only after a grace period of passes that neither failed for want of the
    database nor waited on it for longer than ``max_stall`` (half the grace period) before
    reaping: after either, the workers' beats may be late through no fault of theirs. A
    ticket is reaped by a pass that finds it stale with the same last beat as passes did
    for ``max_stall`` seconds before (``reap_stale``'s ``sightings``; longer than any
    worker's heartbeat interval, which is under half the grace period), so a lost
    worker's trial is taken back about one and a half grace periods after its last beat
    (plus up to two intervals).

    Args:
        store: The store.
        grace: Seconds without heartbeat after which a worker counts as lost.
        interval: Seconds between passes.
        spare: Asked before each pass: the worker whose tickets it spares (see
            ``reap_stale``), or None; a worker's own reaper spares it while it is busy.
    """

    def __init__(
        self,
        store: Store,
        grace: float,
        interval: float,
        spare: Callable[[], str | None] | None = None,
    ) -> None:
        self.store, self.grace, self.interval, self.spare = store, grace, interval, spare
        self.max_stall = grace * MAX_STALL_SHARE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy_since: float | None = None
        self._outage_logged = False
        self._orphans_due = -float("inf")
        self._tidy_failures: dict[str, str] = {}  # the last failure of each clean-up step
        self._sweep_due = -float("inf")
        self._artifacts_due = time.monotonic() + random.uniform(0, TEMPORARY_SWEEP_INTERVAL_S)
        self._sightings: Sightings = {}

    def start(self) -> Reaper:
        """Starts the background thread (a daemon: it never keeps a process alive)."""
        self._healthy_since = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="automl-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread and waits for the pass in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def _tidy(self, what: str, step: Callable[[], object]) -> None:
        """Runs a clean-up step whose own failure (an artifact store that refuses a
        removal, say) is logged when it starts or changes, and does not end the pass: the
        reaping of later passes must go on. A storage outage still ends the pass."""
        try:
            step()
        except Exception as exc:
            if is_transient(exc):
                raise
            message = first_line(exc)
            if self._tidy_failures.get(what) != message:
                logger.warning("reaper: removing %s failed: %s", what, message)
            self._tidy_failures[what] = message
            return
        self._tidy_failures.pop(what, None)

    def _wait_for_the_write_lock(self) -> None:
        """Takes the database's write lock, as every worker's heartbeat must.

        On SQLite a writer holds up writers only: passes that only read went on as if all
        were well while a long write held the workers' beats back, and the first pass after
        it reaped live workers. A pass that waited longer than ``max_stall`` counts as an
        outage instead (on PostgreSQL an empty transaction takes no lock and costs nothing).

        Raises:
            StorageStalledError: If taking it took longer than ``max_stall``.
        """
        clock = _StallClock(self.max_stall)
        with self.store.write():
            pass
        clock.check()

    def run_once(self) -> list[Reaped]:
        """One pass; database errors are logged, never raised."""
        try:
            reaped: list[Reaped] = []
            self._wait_for_the_write_lock()
            healthy_since = self._healthy_since
            if healthy_since is None:
                self._healthy_since = time.monotonic()
            elif time.monotonic() - healthy_since >= self.grace:
                spare = self.spare() if self.spare is not None else None
                reaped = reap_stale(
                    self.store,
                    self.grace,
                    spare,
                    max_stall=self.max_stall,
                    sightings=self._sightings,
                    confirm_after=self.max_stall,
                )
            end_due_studies(self.store)
            sweep_half_created = time.monotonic() >= self._orphans_due
            if sweep_half_created:
                self._orphans_due = time.monotonic() + ORPHAN_SWEEP_INTERVAL_S
            self._tidy(
                "orphans", lambda: remove_orphans(self.store, sweep_half_created=sweep_half_created)
            )
            if time.monotonic() >= self._sweep_due:
                self._sweep_due = time.monotonic() + TEMPORARY_SWEEP_INTERVAL_S
                self._tidy("temporaries", lambda: remove_stale_temporaries(self.store))
            if time.monotonic() >= self._artifacts_due:
                # Cut short by an outage, the sweep is tried again soon (not at every pass:
                # a fault of the sweep alone would stop the reaping).
                self._artifacts_due = time.monotonic() + ORPHAN_ARTIFACT_RETRY_S
                self._tidy("orphan artifacts", lambda: remove_orphan_artifacts(self.store))
                self._artifacts_due = time.monotonic() + ORPHAN_ARTIFACT_SWEEP_INTERVAL_S
        except Exception as exc:
            if not is_transient(exc):
                logger.exception("reaper pass failed")
            elif not self._outage_logged:
                logger.warning("reaper: storage unavailable, will retry: %s", first_line(exc))
                self._outage_logged = True
            self._healthy_since = None
            self._sightings.clear()
            return []
        if self._outage_logged:
            logger.info("reaper: storage reachable again")
            self._outage_logged = False
        return reaped
