"""Reading studies and their trials: the listings, one study, one trial. Light (no spec
models, no registries, no torch), so that ``automl status`` and ``automl trials`` answer
without importing them (``studies`` changes studies)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from automl.spec_summary import objective_metrics
from automl.store import attrs, optuna_rows, tables
from automl.store.attrs import StudyStatus
from automl.store.jobs import RUNNING
from automl.store.pareto import pareto_front
from automl.store.status import ACTIVE
from automl.store.storage import Store, retrying_read
from automl.store.tables import DELETING, TicketState
from automl.store.views import (
    SUMMARY_ATTRS,
    JobState,
    Page,
    StudyDetail,
    StudySummary,
    TrialCounts,
    TrialDetail,
    TrialSummary,
)


class StudyNotFoundError(LookupError):
    """No automl study has this id."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} not found")
        self.study_id = study_id


class TrialNotFoundError(LookupError):
    """The study has no trial with this number."""


class StudyStateError(RuntimeError):
    """The study's status does not allow the operation (e.g. cancelling a finished study)."""


class NoBestTrialError(LookupError):
    """The study has no completed trial (yet, or ever: ``ended``)."""

    def __init__(self, message: str, *, ended: bool = False) -> None:
        super().__init__(message)
        self.ended = ended


def study_row(connection: sa.engine.Connection, study_id: int) -> sa.Row[Any]:
    """The study's ``automl_studies`` row (not one being deleted).

    Raises:
        StudyNotFoundError: If there is no such study.
    """
    row = connection.execute(
        sa.select(tables.studies).where(
            tables.studies.c.study_id == study_id, tables.studies.c.status != DELETING
        )
    ).first()
    if row is None:
        raise StudyNotFoundError(study_id)
    return row


@retrying_read
def stored_spec_text(store: Store, study_id: int) -> str:
    """The spec a study was submitted with, as stored (JSON): what a proxy hands on to its
    workers unchanged, so they read the fields the submitting automl wrote (not the
    proxy's own, which a newer proxy would add with their defaults).

    Raises:
        StudyNotFoundError: If there is no such automl study.
    """
    with store.read() as connection:
        return str(study_row(connection, study_id).spec)


@retrying_read
def get_status(store: Store, study_id: int) -> StudyStatus:
    """The lifecycle status of a study."""
    with store.read() as connection:
        return StudyStatus(study_row(connection, study_id).status)


@retrying_read
def get_study(store: Store, study_id: int) -> StudyDetail:
    """The full view of one study (a few indexed queries, whatever its size).

    Raises:
        StudyNotFoundError: If there is no such study.
    """
    with store.read() as connection:
        row = study_row(connection, study_id)
        fields = _summary_fields(connection, [row])[0]
        spec = json.loads(row.spec)
        warm = spec.get("warm_start") and optuna_rows.study_attr(
            connection, study_id, attrs.WARM_START
        )
        directions, front = fields["directions"], None
        if len(directions) > 1:
            front = _front_size(connection, row, directions, fields["counts"].complete)
        evaluation = _job_state(connection, tables.evaluations, study_id)
        refit = _job_state(connection, tables.refits, study_id)
    warm_start = warm if isinstance(warm, dict) else None
    return StudyDetail(
        **fields,
        spec=spec,
        seed=row.seed,
        warm_start=warm_start,
        pareto_front_size=front,
        test_evaluation=evaluation,
        refit=refit,
    )


def _job_state(connection: sa.engine.Connection, table: sa.Table, study_id: int) -> JobState | None:
    """A post-study job's row (one indexed read), as status shows it; None if none."""
    row = connection.execute(
        sa.select(
            table.c.state, table.c.worker_id, table.c.claimed_at, table.c.finished_at, table.c.note
        ).where(table.c.study_id == study_id)
    ).first()
    if row is None:
        return None
    running = row.state == RUNNING
    return JobState(
        state=row.state,
        worker=row.worker_id if running else None,
        since=stored_datetime(row.claimed_at if running else row.finished_at),
        note=row.note,
    )


_FRONT_SIZES: dict[tuple[str, int, float, int], int] = {}
_FRONT_SIZES_LIMIT = 4096


def _front_size(
    connection: sa.engine.Connection, row: sa.Row[Any], directions: list[str], complete: int
) -> int:
    """The size of the study's Pareto front, found from its completed trials' values
    (``pareto_front``) once per number of completed trials: ``status`` is polled, and the
    front only changes when a trial completes."""
    key = (str(connection.engine.url), row.study_id, row.created_at, complete)
    size = _FRONT_SIZES.get(key)  # one lookup: another thread may clear the cache
    if size is None:
        values = optuna_rows.completed_values(connection, row.study_id)
        size = len(pareto_front(values, directions))
        if len(_FRONT_SIZES) >= _FRONT_SIZES_LIMIT:
            _FRONT_SIZES.clear()
        _FRONT_SIZES[key] = size
    return size


@retrying_read
def list_studies(
    store: Store,
    *,
    status: StudyStatus | None = None,
    project: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[StudySummary]:
    """Studies, newest first, optionally only those with ``status`` or of ``project``
    (one page read)."""
    studies = tables.studies
    where = [studies.c.status != DELETING]
    if status is not None:
        where.append(studies.c.status == status.value)
    if project is not None:
        where.append(studies.c.project == project)
    with store.read() as connection:
        # The total comes with the page (a window count); only an empty page asks again.
        rows = connection.execute(
            sa.select(studies, sa.func.count().over().label("total_count"))
            .where(*where)
            .order_by(studies.c.study_id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        if rows:
            count = rows[0].total_count
        else:
            count = connection.scalar(sa.select(sa.func.count()).select_from(studies).where(*where))
        data = [StudySummary(**fields) for fields in _summary_fields(connection, rows)]
    return Page(data=data, count=int(count or 0))


def _summary_fields(
    connection: sa.engine.Connection, rows: Sequence[sa.Row[Any]]
) -> list[dict[str, Any]]:
    """The ``StudySummary`` fields of these study rows (two more queries for all)."""
    heads = _heads(connection, {row.study_id: row.spec for row in rows})
    single = [sid for sid, (directions, _) in heads.items() if len(directions) == 1]
    maximize = {sid for sid in single if heads[sid][0][0] == "maximize"}
    counts, best = _counts_and_best(connection, list(heads), single, maximize)
    summaries = []
    for row in rows:
        directions, metrics = heads[row.study_id]
        by_state = counts.get(row.study_id, {})
        # Budget not handed out yet is waiting while the study is active, and was dropped
        # with the rest when it ended (a resume hands it out): counts add up to n_trials.
        unissued = max(row.n_trials - row.issued, 0)
        waiting, dropped = (unissued, 0) if row.status in ACTIVE else (0, unissued)
        summaries.append(
            {
                "id": row.study_id,
                "name": row.name,
                "project": row.project,
                "status": StudyStatus(row.status),
                "status_reason": row.status_reason,
                "directions": list(directions),
                "metrics": list(metrics),
                "n_trials": row.n_trials,
                "counts": TrialCounts(
                    waiting=by_state.get("pending", 0) + waiting,
                    running=by_state.get("running", 0),
                    complete=by_state.get("complete", 0),
                    pruned=by_state.get("pruned", 0),
                    fail=by_state.get("fail", 0),
                    cancelled=by_state.get("cancelled", 0) + dropped,
                ),
                "best_value": best.get(row.study_id),
                "created_at": stored_datetime(row.created_at),
                "started_at": stored_datetime(row.started_at),
                "finished_at": stored_datetime(row.finished_at),
            }
        )
    return summaries


Heads = tuple[tuple[str, ...], tuple[str, ...]]
"""A stored spec's directions and metrics, one of each per objective."""

_HEADS: dict[bytes, Heads] = {}
_HEADS_LIMIT = 4096


def spec_heads(connection: sa.engine.Connection, study_id: int, spec_text: str) -> Heads:
    """The directions and metrics of one study's stored spec (JSON ``spec_text``), without
    the spec's models (``_heads``: read once per distinct spec)."""
    return _heads(connection, {study_id: spec_text})[study_id]


def _heads(connection: sa.engine.Connection, specs: Mapping[int, str]) -> dict[int, Heads]:
    """The directions and metrics of these studies' specs (by study id), read once per
    distinct spec text (every listing shows them for each study of its page; a stored
    spec never changes). Kept by a digest of the text, so the cache does not hold the
    specs (an ``enqueue`` can make one large)."""
    heads: dict[int, Heads] = {}
    unread: dict[int, tuple[bytes, str]] = {}
    for study_id, text in specs.items():
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        cached = _HEADS.get(key)  # one lookup: another thread may clear the cache
        if cached is not None:
            heads[study_id] = cached
        else:
            unread[study_id] = key, text
    if unread:
        directions = optuna_rows.directions_of(connection, list(unread))
        if len(_HEADS) + len(unread) > _HEADS_LIMIT:
            _HEADS.clear()  # rare: start over rather than track recency on every listing
        for study_id, (key, text) in unread.items():
            heads[study_id] = _HEADS[key] = _read_heads(text, directions.get(study_id))
    return heads


def _read_heads(spec_text: str, directions: tuple[str, ...] | None) -> Heads:
    """The metrics from the spec's JSON, the directions from its Optuna study, which has
    them resolved (a metric's own direction where the spec names none). Without an Optuna
    study of automl's (another tool deleted it) the whole spec is read."""
    metrics = objective_metrics(json.loads(spec_text))
    if directions is not None and len(directions) == len(metrics):
        return directions, metrics
    from automl.catalog import load_plugins  # imports every registry (torch): only here
    from automl.spec import StudySpec

    load_plugins()  # a plugin's metric has its own direction (the local CLI loads none)
    spec = StudySpec.model_validate_json(spec_text)
    return tuple(spec.directions), tuple(spec.metrics)


def _counts_and_best(
    connection: sa.engine.Connection,
    study_ids: list[int],
    single: list[int],
    maximize: set[int],
) -> tuple[dict[int, dict[str, int]], dict[int, float]]:
    """``_ticket_counts`` of ``study_ids`` and ``optuna_rows.best_values`` of the
    single-objective ones (``maximize``: those maximized), in one query."""
    if not study_ids:
        return {}, {}
    if not single:
        return _ticket_counts(connection, study_ids), {}
    tickets = tables.tickets
    best = optuna_rows.best_values_query(connection, single).subquery()
    query = sa.union_all(
        sa.select(
            tickets.c.study_id,
            tickets.c.state,
            tickets.c.outcome,
            sa.func.count(),
            sa.null(),
            sa.null(),
        )
        .where(optuna_rows.among(connection, tickets.c.study_id, study_ids))
        .group_by(tickets.c.study_id, tickets.c.state, tickets.c.outcome),
        sa.select(best.c[0], sa.null(), sa.null(), sa.null(), best.c[1], best.c[2]),
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    best_rows = []
    for study_id, state, outcome, n, highest, lowest in connection.execute(query).all():
        if state is None:
            best_rows.append((study_id, highest, lowest))
            continue
        key = outcome if state == TicketState.DONE.value else state
        counts[study_id][key] = counts[study_id].get(key, 0) + int(n)
    return counts, optuna_rows.pick_best(best_rows, maximize)


def _ticket_counts(
    connection: sa.engine.Connection, study_ids: list[int]
) -> dict[int, dict[str, int]]:
    """Tickets per study by state (``done`` split by outcome), one GROUP BY."""
    if not study_ids:
        return {}
    tickets = tables.tickets
    query = (
        sa.select(tickets.c.study_id, tickets.c.state, tickets.c.outcome, sa.func.count())
        .where(optuna_rows.among(connection, tickets.c.study_id, study_ids))
        .group_by(tickets.c.study_id, tickets.c.state, tickets.c.outcome)
    )
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for study_id, state, outcome, n in connection.execute(query):
        key = outcome if state == TicketState.DONE.value else state
        counts[study_id][key] = counts[study_id].get(key, 0) + int(n)
    return counts


def stored_datetime(timestamp: float | None) -> datetime | None:
    """A stored time (seconds since the epoch) as a datetime in UTC; None stays None."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


@retrying_read
def list_trials(
    store: Store,
    study_id: int,
    *,
    state: TrialState | None = None,
    limit: int = 100,
    offset: int = 0,
    intermediate_values: bool = True,
) -> Page[TrialSummary]:
    """A study's Optuna trials (every attempt) in number order; reads only the page, and
    without ``intermediate_values`` none of their per-epoch values (null), which are most
    of a page of long trials."""
    listed = (tables.studies.c.study_id == study_id, tables.studies.c.status != DELETING)
    with store.read() as connection:
        if not optuna_rows.optuna_study_exists(connection, study_id):
            # Gone, or another tool's study under the id: none of its trials are automl's.
            if not connection.scalar(sa.select(sa.exists().where(*listed))):
                raise StudyNotFoundError(study_id)
            return Page(data=[], count=0)
        trials, count = optuna_rows.load_trial_page(
            connection,
            study_id,
            state,
            limit,
            offset,
            user_attr_keys=SUMMARY_ATTRS,
            where=[sa.exists().where(*listed)],
            last_step_only=not intermediate_values,
        )
        if count is None:  # an empty page: is there such a study, and how many trials?
            count = connection.execute(
                sa.select(optuna_rows.trial_count(study_id, state)).where(*listed)
            ).scalar()
            if count is None:
                raise StudyNotFoundError(study_id)
    # One validation for the page (in pydantic's core) rather than one per trial.
    fields = [TrialSummary.fields_of(trial) for trial in trials]
    if not intermediate_values:  # read only for a pruned trial's value
        fields = [trial | {"intermediate_values": None} for trial in fields]
    try:
        return _TRIAL_PAGE.model_validate({"data": fields, "count": count})
    except ValidationError:  # an attribute written by hand: shown as null (``tolerant``)
        return Page(data=[TrialSummary.tolerant(trial) for trial in fields], count=count)


_TRIAL_PAGE = Page[TrialSummary]


@retrying_read
def get_trial(store: Store, study_id: int, number: int) -> TrialDetail:
    """One trial of a study, by its number.

    Raises:
        StudyNotFoundError, TrialNotFoundError: If either does not exist.
    """
    return TrialDetail.of(get_frozen_trial(store, study_id, number))


@retrying_read
def get_frozen_trial(store: Store, study_id: int, number: int) -> FrozenTrial:
    """The Optuna trial of a study, by its number."""
    with store.read() as connection:
        study_row(connection, study_id)
        if not optuna_rows.optuna_study_exists(connection, study_id):
            raise TrialNotFoundError(f"study {study_id} has no trial {number}")
    try:
        trial_id = store.reader.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError:
        raise TrialNotFoundError(f"study {study_id} has no trial {number}") from None
    return store.reader.get_trial(trial_id)
