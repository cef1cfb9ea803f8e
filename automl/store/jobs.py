"""The compare-and-set claim shared by the jobs that run after a study (test evaluation,
refit): one row per study in the job's table, claimed by one worker at a time.

A claim bumps the row's ``attempt`` (the claim's identity) with a compare-and-set on the
attempt it read, so two workers can never both hold it; a ``running`` claim whose worker
stopped renewing it (``beat_job``) for ``stale_after`` seconds is due again, at most
``max_tries`` times. Workers pass their grace period (``AUTOML_GRACE_PERIOD``), so a job
whose worker died is taken over as soon as a trial of that worker would be.
A process that cannot read the study's spec (a newer automl stored it, or it names a
plugin's entry not installed here) does not claim the job: it is left to others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import sqlalchemy as sa

from automl.store import optuna_rows, tables
from automl.store.status import lock_study, now
from automl.store.storage import Store

RUNNING = "running"
"""The state of a claimed job, in every job table."""

JOB_STALE_S = 60.0
"""Seconds without a beat after which a claim counts as abandoned, unless the claiming
process says otherwise: the default ``AUTOML_GRACE_PERIOD``."""


@dataclass(frozen=True)
class JobKind:
    """What tells one kind of post-study job from another.

    Attributes:
        table: The job table (keyed by ``study_id``).
        waiting: The state of a job asked for and not claimed yet.
        study_statuses: The study statuses in which the job may run.
        attr: The study attribute that mirrors the job's state.
        max_tries: Claims per request before the job is abandoned.
        abandon: Ends an abandoned job: ``(connection, study_id, attempt, note, at)``.
    """

    table: sa.Table
    waiting: str
    study_statuses: tuple[str, ...]
    attr: str
    max_tries: int
    abandon: Callable[[sa.engine.Connection, int, int, str, float], None]

    def due(self, at: float, stale_after: float) -> sa.ColumnElement[bool]:
        """Jobs that a worker may claim at ``at``: waiting ones and stale claims."""
        table = self.table
        return sa.or_(
            table.c.state == self.waiting,
            sa.and_(table.c.state == RUNNING, table.c.claimed_at < at - stale_after),
        )


Result = TypeVar("Result")


CANDIDATES = 16
"""Due jobs one claim looks at: a stale claim not yet confirmed is passed over."""


class Sightings:
    """The stale running claims one process saw, per study: which claim (its attempt and
    last beat) and since when. Shared by the claims of all its threads and workers (a
    proxy's): a look adds to it and never drops another look's sightings, since the same
    claim seen again later proves no beat came in between, whatever was asked for."""

    LIMIT = 4096
    """Studies kept; past them the oldest sightings are forgotten (they start again)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[tuple[int, float | None], float]] = {}
        self._lock = threading.Lock()

    def confirmed(self, stale: list[sa.Row[Any]], confirm_after: float) -> set[int]:
        """The studies of ``stale`` whose claim was first seen as it is now at least
        ``confirm_after`` seconds ago."""
        now_s = time.monotonic()
        confirmed = set()
        with self._lock:
            for row in stale:
                claim = (row.attempt, row.claimed_at)
                seen, since = self._seen.get(row.study_id, (None, now_s))
                if seen != claim:
                    since = now_s
                self._seen[row.study_id] = (claim, since)
                if now_s - since >= confirm_after:
                    confirmed.add(row.study_id)
            while len(self._seen) > self.LIMIT:
                del self._seen[next(iter(self._seen))]
        return confirmed

    def forget(self) -> None:
        """Drops every sighting: after a database error, beats may have failed meanwhile."""
        with self._lock:
            self._seen.clear()


def job_result(kind: type[Result], data: dict[str, Any]) -> Result:
    """A job's result (a dataclass) from its JSON, which a newer automl may have written
    with fields this one does not know: those are left out (a process of the release
    before this rule, ``kind(**data)``, refuses any)."""
    names = {field.name for field in fields(kind)}  # type: ignore[arg-type]
    return kind(**{name: value for name, value in data.items() if name in names})


def lost_claims(
    store: Store,
    kind: JobKind,
    silent_for: float,
    study_id: int | None,
    exclude: Collection[int] = (),
) -> int:
    """How many running jobs of ``kind`` (of ``study_id``, else of any study that may run
    them, but those in ``exclude``) have gone without a beat for ``silent_for`` seconds: a
    lost worker's, which the next claim after the grace period takes over."""
    jobs, studies = kind.table, tables.studies
    query = (
        sa.select(sa.func.count())
        .select_from(jobs.join(studies, studies.c.study_id == jobs.c.study_id))
        .where(jobs.c.state == RUNNING, studies.c.status.in_(kind.study_statuses))
    )
    if study_id is not None:
        query = query.where(jobs.c.study_id == study_id)
    if exclude:
        query = query.where(jobs.c.study_id.not_in(sorted(exclude)))
    with store.read() as connection:
        cutoff = now(connection) - silent_for
        return int(connection.scalar(query.where(jobs.c.claimed_at < cutoff)) or 0)


def claim_job(
    store: Store,
    kind: JobKind,
    worker_id: str,
    study_id: int | None,
    stale_after: float,
    exclude: Collection[int],
    check: Callable[[int, str], None],
    sightings: Sightings | None = None,
    confirm_after: float = 0.0,
) -> tuple[sa.Row[Any], int] | None:
    """Claims the oldest due job of ``kind`` whose study may run it.

    Costs one indexed read when none is due.

    Args:
        store: The store.
        kind: The kind of job.
        worker_id: The claiming worker's unique id.
        study_id: Only claim this study's job.
        stale_after: Seconds after which a running claim counts as abandoned.
        exclude: Studies whose jobs the worker leaves to others.
        check: Raises ``UnreadableStudyError`` for a study (id, stored spec) that the
            claiming process cannot read.
        sightings: What this process's earlier claims found stale: a running claim is
            taken over only if one found it stale, with the same claim and last beat, at
            least ``confirm_after`` seconds before, as the reaper confirms a trial's. After
            a database outage every claim looks stale, and its worker's next beat (within
            its heartbeat interval, under half the grace period) lands in that time. None:
            every stale claim is taken over at once.
        confirm_after: See ``sightings``.

    Returns:
        The study's row and the claim's attempt, or None when nothing is due (or another
        worker was faster, or the job was abandoned just now).

    Raises:
        UnreadableStudyError: If this process cannot read the due job's study: nothing
            was claimed, and the caller should exclude the study from its next claims.
    """
    jobs, studies = kind.table, tables.studies
    query = (
        sa.select(jobs.c.study_id, jobs.c.state, jobs.c.attempt, jobs.c.claimed_at)
        .join(studies, studies.c.study_id == jobs.c.study_id)
        .where(studies.c.status.in_(kind.study_statuses))
        .order_by(jobs.c.requested_at, jobs.c.study_id)
        .limit(CANDIDATES)
    )
    if study_id is not None:
        query = query.where(jobs.c.study_id == study_id)
    if exclude:
        query = query.where(jobs.c.study_id.not_in(sorted(exclude)))
    try:
        with store.read() as connection:
            due = connection.execute(query.where(kind.due(now(connection), stale_after))).all()
    except Exception:
        if sightings is not None:
            sightings.forget()
        raise
    if sightings is not None:
        stale = [row for row in due if row.state == RUNNING]
        confirmed = sightings.confirmed(stale, confirm_after)
        due = [row for row in due if row.state != RUNNING or row.study_id in confirmed]
    if not due:
        return None
    candidate, seen = due[0].study_id, due[0]
    waiting = time.monotonic()
    with store.write() as connection:
        held_up = time.monotonic() - waiting > confirm_after
        if sightings is not None and seen.state == RUNNING and held_up:
            return None  # a write lock held this long held the claim's beats back too
        at = now(connection)
        study = lock_study(connection, candidate)
        row = connection.execute(
            sa.select(jobs).where(jobs.c.study_id == candidate, kind.due(at, stale_after))
        ).first()
        if study is None or study.status not in kind.study_statuses or row is None:
            return None  # another worker was first, or the study was resumed or deleted
        if row.state == RUNNING and (row.attempt, row.claimed_at) != (
            seen.attempt,
            seen.claimed_at,
        ):
            return None  # its worker beat (or another took it over) since it was confirmed
        check(candidate, study.spec)  # raising rolls the transaction back
        if row.tries >= kind.max_tries:
            note = f"abandoned: {row.tries} claims ended without a result"
            kind.abandon(connection, candidate, row.attempt, note, at)
            return None
        claimed = connection.execute(
            jobs.update()
            .where(jobs.c.study_id == candidate, jobs.c.attempt == row.attempt)
            .values(
                state=RUNNING,
                attempt=row.attempt + 1,
                tries=row.tries + 1,
                worker_id=worker_id,
                claimed_at=at,
            )
        )
        if claimed.rowcount != 1:
            return None
        running = {"state": RUNNING, "worker": worker_id}
        optuna_rows.put_study_attrs(connection, candidate, {kind.attr: running})
    return study, row.attempt + 1


def release_job(store: Store, kind: JobKind, study_id: int, attempt: int, worker_id: str) -> bool:
    """Gives a claim back unfinished because its worker is stopping: the job is due again
    at once (not after ``stale_after``), and the claim does not count as a try.

    Returns:
        False if the claim was no longer held (taken over, superseded, study deleted).
    """
    jobs = kind.table
    with store.write() as connection:
        # The study's row first, the order a deletion locks in.
        if lock_study(connection, study_id) is None:
            return False
        released = connection.execute(
            jobs.update()
            .where(held(jobs, study_id, attempt, worker_id), jobs.c.state == RUNNING)
            .values(
                state=kind.waiting,
                tries=jobs.c.tries - 1,  # the claim counted one; held, it is >= 1
                worker_id=None,
                claimed_at=None,
            )
        )
        if released.rowcount != 1:
            return False
        optuna_rows.put_study_attrs(connection, study_id, {kind.attr: {"state": kind.waiting}})
    return True


def beat_job(store: Store, kind: JobKind, study_id: int, attempt: int, worker_id: str) -> bool:
    """Renews a running claim (its worker is still at it).

    Returns:
        False if the claim was no longer held (taken over, finished, study deleted).
    """
    jobs = kind.table
    with store.write() as connection:
        renewed = connection.execute(
            jobs.update()
            .where(held(jobs, study_id, attempt, worker_id), jobs.c.state == RUNNING)
            .values(claimed_at=tables.db_now())
        )
    return renewed.rowcount == 1


def held(table: sa.Table, study_id: int, attempt: int, worker_id: str) -> sa.ColumnElement[bool]:
    """The job row of a worker's claim (none once a later claim took it over)."""
    return sa.and_(
        table.c.study_id == study_id, table.c.attempt == attempt, table.c.worker_id == worker_id
    )
