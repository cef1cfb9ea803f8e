"""The few SQL statements automl runs on Optuna's own tables, all in this one module.

Why not Optuna's public API for these: each must happen *in the same transaction* as a
change to automl's tables, which Optuna's storage (one session per call) cannot join.

- Failing a trial whose worker was lost must be atomic with re-queuing its ticket, and a
  compare-and-set (``WHERE state = 'RUNNING'``), so a reaper racing the worker's own
  ``tell`` ends with exactly one of the two outcomes.
- A study's status is mirrored into its user attributes (for optuna-dashboard) in the
  transaction that changes it, so the mirror never disagrees with ``automl_studies``.
- Counting, paging, best values and reading one page of trials are a few queries over
  one study's rows, where the public API would load every trial of the study (or make a
  round trip per trial and relation).
- Deleting a study is a statement per table, in the transaction that deletes automl's
  rows of it; Optuna's ORM deletes row by row (a minute for 10,000 trials).

Every query that ranks COMPLETE trials (best values, best trial, top-k, the values a
Pareto front is found from) ranks automl's trials only (``AUTOML_TRIAL``): a trial added
to an automl study with plain Optuna (``add_trial``, ``optimize``, an enqueued trial) has
no configuration, metrics or weights of automl's, so it is listed but never the best.


Only long-stable columns of Optuna's RDB schema are used; ``tests/store/test_optuna_rows.py``
pins them against the installed Optuna on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    json_to_distribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite

from automl.store import attrs, tables

_optuna = sa.MetaData()  # describes Optuna's tables; never used to create anything

_TrialStateType = sa.Enum(TrialState, name="trialstate", create_constraint=False)
_ValueType = sa.Enum("FINITE", "INF_POS", "INF_NEG", name="trialvaluetype", create_constraint=False)
_StepType = sa.Enum(
    "FINITE",
    "INF_POS",
    "INF_NEG",
    "NAN",
    name="trialintermediatevaluetype",
    create_constraint=False,
)
_SPECIAL = {"INF_POS": math.inf, "INF_NEG": -math.inf, "NAN": math.nan}

studies = sa.Table(
    "studies",
    _optuna,
    sa.Column("study_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(512)),
)
trials = sa.Table(
    "trials",
    _optuna,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("number", sa.Integer),
    sa.Column("study_id", sa.Integer),
    sa.Column("state", _TrialStateType),
    sa.Column("datetime_start", sa.DateTime),
    sa.Column("datetime_complete", sa.DateTime),
)


def _attribute_table(name: str, owner: str) -> sa.Table:
    """One of Optuna's four key/JSON-value attribute tables (of trials or studies)."""
    return sa.Table(
        name,
        _optuna,
        sa.Column(f"{name.removesuffix('s')}_id", sa.Integer, primary_key=True),
        sa.Column(owner, sa.Integer),
        sa.Column("key", sa.String(512)),
        sa.Column("value_json", sa.Text),
    )


trial_values = sa.Table(
    "trial_values",
    _optuna,
    sa.Column("trial_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("objective", sa.Integer),
    sa.Column("value", sa.Float),
    sa.Column("value_type", _ValueType),
)
trial_user_attributes = _attribute_table("trial_user_attributes", "trial_id")
trial_params = sa.Table(
    "trial_params",
    _optuna,
    sa.Column("param_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("param_name", sa.String(512)),
    sa.Column("param_value", sa.Float),
    sa.Column("distribution_json", sa.Text),
)
trial_intermediate_values = sa.Table(
    "trial_intermediate_values",
    _optuna,
    sa.Column("trial_intermediate_value_id", sa.Integer, primary_key=True),
    sa.Column("trial_id", sa.Integer),
    sa.Column("step", sa.Integer),
    sa.Column("intermediate_value", sa.Float),
    sa.Column("intermediate_value_type", _StepType),
)
trial_system_attributes = _attribute_table("trial_system_attributes", "trial_id")
study_user_attributes = _attribute_table("study_user_attributes", "study_id")
study_system_attributes = _attribute_table("study_system_attributes", "study_id")
study_directions = sa.Table(
    "study_directions",
    _optuna,
    sa.Column("study_direction_id", sa.Integer, primary_key=True),
    sa.Column("direction", sa.Enum(StudyDirection, name="studydirection", create_constraint=False)),
    sa.Column("study_id", sa.Integer),
    sa.Column("objective", sa.Integer),
)
trial_heartbeats = sa.Table("trial_heartbeats", _optuna, sa.Column("trial_id", sa.Integer))

TRIAL_ROWS = (
    trial_params,
    trial_values,
    trial_intermediate_values,
    trial_user_attributes,
    trial_system_attributes,
    trial_heartbeats,
)
"""Optuna's tables of rows that belong to a trial (``trial_id``)."""
STUDY_ROWS = (study_directions, study_user_attributes, study_system_attributes)
"""Optuna's tables of rows that belong to a study (``study_id``), besides its trials."""


def _trial_has_attr(key: str) -> sa.Exists:
    """The ``trials`` row's trial has the user attribute ``key`` (a lookup in Optuna's
    unique (trial_id, key) index)."""
    return (
        sa.exists()
        .where(
            trial_user_attributes.c.trial_id == trials.c.trial_id,
            trial_user_attributes.c.key == key,
        )
        .correlate(trials)
    )


AUTOML_TRIAL = _trial_has_attr(attrs.TICKET)
"""The ``trials`` row is automl's: a worker created it with its ticket (``automl.ticket``,
set with the trial, never removed). A lookup in Optuna's unique (trial_id, key) index;
every ranking query has it, so that trials added with plain Optuna are never ranked."""


RESULT_RECORDED = _trial_has_attr(attrs.METRICS)
"""The trial's worker recorded its result (``automl.metrics``, written before its tell):
a trial of automl's that another tool told COMPLETE while it ran (plain optuna-dashboard's
"tell", a notebook) has a made-up value and none of automl's results."""

_RANKED = (
    trials.c.state == TrialState.COMPLETE,
    trial_values.c.objective == 0,
    trial_values.c.value_type == "FINITE",
    AUTOML_TRIAL,
    RESULT_RECORDED,
)
"""What every ranking query (joined to ``trial_values``) asks of a trial: COMPLETE, of
automl's, with its worker's result recorded and a finite first objective."""


def _now_utc_naive(connection: sa.engine.Connection) -> Any:
    """Now, as Optuna's RDB schema keeps trial times (naive UTC), on the database's clock:
    a trial started by one machine and ended by another (the reaper, a proxy) gets a
    duration whatever their clocks say. A SQLite file is on this machine, whose clock it
    is."""
    if connection.dialect.name == "sqlite":
        return datetime.now(UTC).replace(tzinfo=None)
    return sa.func.timezone("UTC", sa.func.clock_timestamp(), type_=sa.DateTime())


def fail_running_trial(
    connection: sa.engine.Connection, trial_id: int, user_attrs: Mapping[str, Any]
) -> bool:
    """Moves a RUNNING trial to FAIL and sets ``user_attrs`` on it (compare-and-set).

    Returns:
        False if the trial was no longer RUNNING (it finished meanwhile); nothing changed.
    """
    changed = connection.execute(
        trials.update()
        .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
        .values(state=TrialState.FAIL, datetime_complete=_now_utc_naive(connection))
    )
    if changed.rowcount != 1:
        return False
    put_trial_attrs(connection, trial_id, user_attrs)
    return True


def end_running_trial(
    connection: sa.engine.Connection,
    trial_id: int,
    state: TrialState,
    values: Sequence[float] | None,
) -> bool:
    """Ends a RUNNING trial with ``values`` (compare-and-set), as Optuna's
    ``set_trial_state_values`` does for a finished state, in the caller's transaction.

    Returns:
        False if the trial was no longer RUNNING; nothing changed.
    """
    assert state.is_finished(), state
    changed = connection.execute(
        trials.update()
        .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
        .values(state=state, datetime_complete=_now_utc_naive(connection))
    )
    if changed.rowcount != 1:
        return False
    if values:
        rows = [
            {
                "trial_id": trial_id,
                "objective": objective,
                "value": None if math.isinf(value) else value,
                "value_type": _value_type(value),
            }
            for objective, value in enumerate(values)
        ]
        _upsert(connection, trial_values, ("trial_id", "objective"), rows)
    return True


def _value_type(value: float) -> str:
    if math.isinf(value):
        return "INF_POS" if value > 0 else "INF_NEG"
    return "FINITE"


def put_running_trial_attrs(
    connection: sa.engine.Connection, trial_id: int, user_attrs: Mapping[str, Any]
) -> bool:
    """Sets user attributes of a trial that is still RUNNING, the state read under a row lock.

    Returns:
        False if the trial is no longer RUNNING (a reaper ended it); nothing changed.
    """
    state = connection.scalar(
        sa.select(trials.c.state).where(trials.c.trial_id == trial_id).with_for_update()
    )
    if state != TrialState.RUNNING:
        return False
    put_trial_attrs(connection, trial_id, user_attrs)
    return True


def put_running_trial_writes(
    connection: sa.engine.Connection,
    trial_id: int,
    *,
    params: Mapping[str, tuple[float, str]],
    steps: Mapping[int, float],
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any],
    end: tuple[TrialState, Sequence[float] | None] | None = None,
) -> bool:
    """Applies a running trial's buffered writes at once, the state read under a row lock.

    What Optuna's ``set_trial_param``, ``set_trial_intermediate_value``,
    ``set_trial_user_attr`` and ``set_trial_system_attr`` write, one transaction for all.

    Args:
        connection: An open write transaction.
        trial_id: The trial.
        params: Name -> (internal value, distribution JSON), in suggestion order.
        steps: Step -> intermediate value (NaN and infinities allowed).
        user_attrs: User attributes to set.
        system_attrs: System attributes to set.
        end: Then end the trial in this state with these values (``end_running_trial``).

    Returns:
        False if the trial is no longer RUNNING (a reaper ended it); nothing changed.

    Raises:
        ValueError: If a param's distribution is incompatible with the one the study's
            trials already use for that name (as Optuna raises).
    """
    row = connection.execute(
        sa.select(trials.c.state, trials.c.study_id)
        .where(trials.c.trial_id == trial_id)
        .with_for_update()
    ).first()
    if row is None or row.state != TrialState.RUNNING:
        return False
    if params:
        _check_param_distributions(connection, row.study_id, params)
        rows = [
            {"trial_id": trial_id, "param_name": name, "param_value": v, "distribution_json": d}
            for name, (v, d) in params.items()
        ]
        _upsert(connection, trial_params, ("trial_id", "param_name"), rows)
    if steps:
        rows = _step_rows(trial_id, steps)
        _upsert(connection, trial_intermediate_values, ("trial_id", "step"), rows)
    put_trial_attrs(connection, trial_id, user_attrs)
    _put(connection, trial_system_attributes, "trial_id", trial_id, system_attrs)
    if end is not None:
        return end_running_trial(connection, trial_id, *end)
    return True


def create_running_trial(
    connection: sa.engine.Connection,
    study_id: int,
    *,
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any],
    steps: Mapping[int, float],
) -> tuple[int, int] | None:
    """Creates a RUNNING trial with attributes and reports, as Optuna's
    ``create_new_trial`` does for such a template, in a few statements (Optuna: two per
    attribute, and the trial read back).

    The study's row is locked first, as Optuna does, so the number (how many trials the
    study already has) is unique among the study's trials. The trial starts now on the
    database's clock (its end is stamped on the same clock).

    Args:
        connection: An open write transaction.
        study_id: The study.
        user_attrs: User attributes.
        system_attrs: System attributes.
        steps: Step -> intermediate value (NaN and infinities allowed).

    Returns:
        The trial's id and number; None if the study does not exist.
    """
    study = sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
    # FOR NO KEY UPDATE on PostgreSQL: it orders trial creations, yet lets others insert
    # rows that refer to the study (the reaper, ending the study, adds its attributes).
    if connection.scalar(study.with_for_update(key_share=True)) is None:
        return None
    if not optuna_study_exists(connection, study_id):
        return None  # another tool's study under the id of automl's, deleted outside it
    number = connection.scalar(
        sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == study_id)
    )
    created = connection.execute(
        trials.insert().values(
            study_id=study_id,
            number=number,
            state=TrialState.RUNNING,
            datetime_start=_now_utc_naive(connection),
        )
    )
    trial_id = int(created.inserted_primary_key[0])
    for table, values in (
        (trial_user_attributes, user_attrs),
        (trial_system_attributes, system_attrs),
    ):
        if values:
            rows = [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in values.items()
            ]
            connection.execute(table.insert(), rows)
    if steps:
        connection.execute(trial_intermediate_values.insert(), _step_rows(trial_id, steps))
    return trial_id, int(number or 0)


def _step_rows(trial_id: int, steps: Mapping[int, float]) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": trial_id,
            "step": step,
            "intermediate_value": None if _step_type(value) != "FINITE" else value,
            "intermediate_value_type": _step_type(value),
        }
        for step, value in steps.items()
    ]


def _step_type(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF_POS" if value > 0 else "INF_NEG"
    return "FINITE"


MAX_UNION_BRANCHES = 200
"""Names checked per statement (SQLite allows 500 terms in a compound SELECT)."""


def _check_param_distributions(
    connection: sa.engine.Connection, study_id: int, params: Mapping[str, tuple[float, str]]
) -> None:
    """Raises ``ValueError`` as Optuna's ``set_trial_param`` does for a param whose
    distribution differs in kind from the one the study already records under its name."""
    names = list(params)
    for start in range(0, len(names), MAX_UNION_BRANCHES):
        # One statement: per name, the first recorded distribution (each branch stops there).
        firsts = [
            sa.select(trial_params.c.param_name, trial_params.c.distribution_json)
            .join(trials, trials.c.trial_id == trial_params.c.trial_id)
            .where(trials.c.study_id == study_id, trial_params.c.param_name == name)
            .limit(1)
            .subquery()
            for name in names[start : start + MAX_UNION_BRANCHES]
        ]
        branches = [sa.select(first.c.param_name, first.c.distribution_json) for first in firsts]
        query = branches[0] if len(branches) == 1 else sa.union_all(*branches)
        for name, previous in connection.execute(query):
            dist_json = params[name][1]
            if previous != dist_json:
                check_distribution_compatibility(_distribution(previous), _distribution(dist_json))


def trial_state(connection: sa.engine.Connection, trial_id: int) -> TrialState | None:
    """The state of a trial, or None if it does not exist."""
    return connection.scalar(sa.select(trials.c.state).where(trials.c.trial_id == trial_id))


def trial_number(connection: sa.engine.Connection, trial_id: int) -> int | None:
    """The number of a trial in its study, or None if it does not exist (one query, where
    Optuna's ``get_trial_number_from_id`` reads the whole trial)."""
    return connection.scalar(sa.select(trials.c.number).where(trials.c.trial_id == trial_id))


def running_trials_with_attr(
    connection: sa.engine.Connection, study_id: int, key: str, value: Any
) -> list[int]:
    """Ids of the study's RUNNING trials whose user attribute ``key`` equals ``value``."""
    query = (
        sa.select(trials.c.trial_id)
        .join(trial_user_attributes, trial_user_attributes.c.trial_id == trials.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            trials.c.state == TrialState.RUNNING,
            trial_user_attributes.c.key == key,
            trial_user_attributes.c.value_json == json.dumps(value),
        )
    )
    return list(connection.scalars(query))


def put_trial_attrs(
    connection: sa.engine.Connection, trial_id: int, user_attrs: Mapping[str, Any]
) -> None:
    """Sets user attributes of a trial (replacing existing values)."""
    _put(connection, trial_user_attributes, "trial_id", trial_id, user_attrs)


def put_study_attrs(
    connection: sa.engine.Connection, study_id: int, user_attrs: Mapping[str, Any]
) -> None:
    """Sets user attributes of a study (replacing existing values)."""
    _put(connection, study_user_attributes, "study_id", study_id, user_attrs)


def _put(
    connection: sa.engine.Connection,
    table: sa.Table,
    owner: str,
    owner_id: int,
    values: Mapping[str, Any],
) -> None:
    if not values:
        return
    rows = [{owner: owner_id, "key": key, "value_json": json.dumps(v)} for key, v in values.items()]
    _upsert(connection, table, (owner, "key"), rows)


def _upsert(
    connection: sa.engine.Connection,
    table: sa.Table,
    keys: tuple[str, str],
    rows: list[dict[str, Any]],
) -> None:
    """Inserts ``rows``, replacing the other columns of rows whose ``keys`` (one of
    Optuna's unique constraints) already exist: one statement on PostgreSQL and SQLite."""
    insert: Any
    if connection.dialect.name == "postgresql":
        insert = postgresql.insert(table)
    elif connection.dialect.name == "sqlite":
        insert = sqlite.insert(table)
    else:  # another database Optuna runs on: delete, then insert
        first, second = keys
        for row in rows:
            connection.execute(
                table.delete().where(table.c[first] == row[first], table.c[second] == row[second])
            )
        connection.execute(table.insert(), rows)
        return
    replaced = [name for name in rows[0] if name not in keys]
    statement = insert.on_conflict_do_update(
        index_elements=[table.c[name] for name in keys],
        set_={name: insert.excluded[name] for name in replaced},
    )
    connection.execute(statement, rows)


def count_trials(
    connection: sa.engine.Connection, study_id: int, state: TrialState | None = None
) -> int:
    """Number of the study's trials (optionally in ``state``), counted in SQL."""
    return int(connection.scalar(sa.select(trial_count(study_id, state))) or 0)


def trial_count(study_id: int, state: TrialState | None = None) -> sa.ScalarSelect[int]:
    """``count_trials``'s count, to read within another statement."""
    query = sa.select(sa.func.count()).select_from(trials).where(trials.c.study_id == study_id)
    if state is not None:
        query = query.where(trials.c.state == state)
    return query.scalar_subquery()


def page_trial_ids(
    connection: sa.engine.Connection,
    study_id: int,
    state: TrialState | None,
    limit: int,
    offset: int,
) -> list[int]:
    """Ids of one page of the study's trials in number order (only that page is read)."""
    query = sa.select(trials.c.trial_id).where(trials.c.study_id == study_id)
    if state is not None:
        query = query.where(trials.c.state == state)
    query = query.order_by(trials.c.number).limit(limit).offset(offset)
    return list(connection.scalars(query))


def load_trials(
    connection: sa.engine.Connection,
    trial_ids: list[int],
    user_attr_keys: Collection[str] | None = None,
    *,
    leave_out: Collection[str] = (),
    system_attrs: bool = False,
) -> list[FrozenTrial]:
    """The trials with these ids, in that order, in two queries whatever their number.

    Like ``storage.get_trial`` for each, without the system attributes unless asked (what
    the listing shows needs none), and without a round trip per trial and per relation.

    Args:
        connection: An open connection.
        trial_ids: Which trials.
        user_attr_keys: Only these user attributes (None: all of them).
        leave_out: Not these user attributes.
        system_attrs: With the system attributes.
    """
    if not trial_ids:
        return []
    query = sa.select(*_TRIAL_COLUMNS).where(among(connection, trials.c.trial_id, trial_ids))
    rows = connection.execute(query)
    by_id = {row.trial_id: row for row in rows.all()}
    found = [by_id[i] for i in trial_ids if i in by_id]
    attributes = _Attributes(user_attr_keys, leave_out, system_attrs)
    return _assemble(connection, found, attributes)


def trial_numbers_after(
    connection: sa.engine.Connection, study_id: int, after_id: int
) -> dict[int, int]:
    """The number of each of the study's trials whose id is above ``after_id``, by trial
    id in id order (one query on Optuna's study/trial index)."""
    query = (
        sa.select(trials.c.trial_id, trials.c.number)
        .where(trials.c.study_id == study_id, trials.c.trial_id > after_id)
        .order_by(trials.c.trial_id)
    )
    return {int(trial_id): int(number) for trial_id, number in connection.execute(query)}


def study_exists(connection: sa.engine.Connection, study_id: int) -> bool:
    """Whether Optuna's ``studies`` table has the study (a primary-key lookup)."""
    query = sa.select(studies.c.study_id).where(studies.c.study_id == study_id)
    return connection.scalar(query) is not None


def load_trial_page(
    connection: sa.engine.Connection,
    study_id: int,
    state: TrialState | None,
    limit: int,
    offset: int,
    user_attr_keys: Collection[str] | None = None,
    *,
    where: Sequence[sa.ColumnElement[bool]] = (),
    last_step_only: bool = False,
) -> tuple[list[FrozenTrial], int | None]:
    """One page of the study's trials in number order, in two queries (``page_trial_ids``
    and ``load_trials`` would take six), with the number of trials on all pages.

    Args:
        connection: An open connection.
        study_id: The study.
        state: Only trials in this state.
        limit: Page size.
        offset: Trials to skip.
        user_attr_keys: Only these user attributes (None: all of them).
        where: More conditions for the page's rows (e.g. that the study is listed).
        last_step_only: Read only each trial's last intermediate value (what a pruned
            trial's value is), not every epoch's.

    Returns:
        The trials, and ``count_trials``'s count, which comes with the page: None when
        the page is empty (past the end, or no trial matched).
    """
    query = sa.select(*_TRIAL_COLUMNS, sa.func.count().over().label("total_count")).where(
        trials.c.study_id == study_id, *where
    )
    if state is not None:
        query = query.where(trials.c.state == state)
    query = query.order_by(trials.c.number).limit(limit).offset(offset)
    rows = connection.execute(query).all()
    total = int(rows[0].total_count) if rows else None
    attributes = _Attributes(user_attr_keys, last_step_only=last_step_only)
    return _assemble(connection, rows, attributes), total


def load_study_trials(
    connection: sa.engine.Connection, study_id: int, user_attr_keys: Collection[str]
) -> list[FrozenTrial]:
    """Every trial of the study in number order, in two queries, with only the user
    attributes ``user_attr_keys`` and no system attributes: what a view of all of them
    needs, without the per-trial histories and reports a study of thousands holds."""
    query = sa.select(*_TRIAL_COLUMNS).where(trials.c.study_id == study_id)
    rows = connection.execute(query.order_by(trials.c.number)).all()
    return _assemble(connection, rows, _Attributes(user_attr_keys))


_TRIAL_COLUMNS = (
    trials.c.trial_id,
    trials.c.number,
    trials.c.state,
    trials.c.datetime_start,
    trials.c.datetime_complete,
)


def among(
    connection: sa.engine.Connection, column: sa.ColumnElement[int], ids: Sequence[int]
) -> sa.ColumnElement[bool]:
    """``column`` is one of ``ids``: ``= ANY(array)`` on PostgreSQL (one parameter, so one
    cached, prepared statement whatever the number of ids), an expanded ``IN`` elsewhere."""
    return _is_among(connection, column, _ids_parameter(connection, ids))


def _ids_parameter(connection: sa.engine.Connection, ids: Sequence[int]) -> sa.BindParameter[Any]:
    # unique: several lists of ids can meet in one statement.
    if connection.dialect.name == "postgresql":
        return sa.bindparam("ids", list(ids), type_=_INT_ARRAY, unique=True)
    return sa.bindparam("ids", list(ids), expanding=True, unique=True)


def _is_among(
    connection: sa.engine.Connection, column: sa.ColumnElement[int], ids: sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    if connection.dialect.name == "postgresql":
        return column == sa.any_(ids)
    return column.in_(ids)


_INT_ARRAY = postgresql.ARRAY(sa.Integer)
_VALUE, _STEP, _PARAM, _ATTR, _SYSTEM_ATTR = range(5)


@dataclass(frozen=True)
class _Attributes:
    """Which attributes a load reads: ``keys`` (None: every user attribute) but not
    ``leave_out``, the system attributes if ``system``, and of the intermediate values
    only each trial's last if ``last_step_only``."""

    keys: Collection[str] | None = None
    leave_out: Collection[str] = ()
    system: bool = False
    last_step_only: bool = False


def _relations(
    connection: sa.engine.Connection,
    trial_ids: Sequence[int],
    attributes: _Attributes,
) -> sa.CompoundSelect[Any]:
    """The trials' values, steps, params and attributes in one ``UNION ALL`` (one round
    trip): rows of (kind, trial_id, int key, text key, float value, text value)."""
    ids = _ids_parameter(connection, trial_ids)
    values, steps = trial_values, trial_intermediate_values
    params, user_attrs = trial_params, trial_user_attributes

    def kind(number: int) -> sa.ColumnElement[int]:
        return sa.literal_column(str(number), sa.Integer)

    attrs_query = sa.select(
        kind(_ATTR),
        user_attrs.c.trial_id,
        sa.null(),
        user_attrs.c.key,
        sa.null(),
        user_attrs.c.value_json,
    ).where(_is_among(connection, user_attrs.c.trial_id, ids))
    if attributes.keys is not None:
        attrs_query = attrs_query.where(user_attrs.c.key.in_(sorted(attributes.keys)))
    if attributes.leave_out:
        attrs_query = attrs_query.where(user_attrs.c.key.not_in(sorted(attributes.leave_out)))
    steps_query = sa.select(
        kind(_STEP),
        steps.c.trial_id,
        steps.c.step,
        sa.null(),
        steps.c.intermediate_value,
        sa.cast(steps.c.intermediate_value_type, sa.Text),
    )
    if attributes.last_step_only:  # the subquery holds the ids: no second list of them
        last = (
            sa.select(steps.c.trial_id, sa.func.max(steps.c.step).label("step"))
            .where(_is_among(connection, steps.c.trial_id, ids))
            .group_by(steps.c.trial_id)
            .subquery()
        )
        steps_query = steps_query.join(
            last, sa.and_(steps.c.trial_id == last.c.trial_id, steps.c.step == last.c.step)
        )
    else:
        steps_query = steps_query.where(_is_among(connection, steps.c.trial_id, ids))
    system: list[sa.Select[Any]] = []
    if attributes.system:
        system_attrs = trial_system_attributes
        system.append(
            sa.select(
                kind(_SYSTEM_ATTR),
                system_attrs.c.trial_id,
                sa.null(),
                system_attrs.c.key,
                sa.null(),
                system_attrs.c.value_json,
            ).where(_is_among(connection, system_attrs.c.trial_id, ids))
        )
    return sa.union_all(
        sa.select(
            kind(_VALUE),
            values.c.trial_id,
            values.c.objective,
            sa.null(),
            values.c.value,
            sa.cast(values.c.value_type, sa.Text),
        ).where(_is_among(connection, values.c.trial_id, ids)),
        steps_query,
        sa.select(
            kind(_PARAM),
            params.c.trial_id,
            params.c.param_id,
            params.c.param_name,
            params.c.param_value,
            params.c.distribution_json,
        ).where(_is_among(connection, params.c.trial_id, ids)),
        attrs_query,
        *system,
    )


def _assemble(
    connection: sa.engine.Connection,
    rows: Sequence[sa.Row[Any]],
    attributes: _Attributes = _Attributes(),
) -> list[FrozenTrial]:
    """FrozenTrials of these ``trials`` rows (in their order): one more query for the rest."""
    if not rows:
        return []
    values: dict[int, dict[int, float]] = defaultdict(dict)
    steps: dict[int, dict[int, float]] = defaultdict(dict)
    param_rows: list[tuple[int, int, str, float, str]] = []
    user_attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    system_attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    query = _relations(connection, [row.trial_id for row in rows], attributes)
    for kind, trial_id, number, name, value, text in connection.execute(query).all():
        if kind == _VALUE:
            values[trial_id][number] = _SPECIAL.get(text, value)
        elif kind == _STEP:
            steps[trial_id][number] = _SPECIAL.get(text, value)
        elif kind == _PARAM:
            param_rows.append((number, trial_id, name, value, text))
        elif kind == _ATTR:
            user_attrs[trial_id][name] = json.loads(text)
        else:
            system_attrs[trial_id][name] = json.loads(text)
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    dists: dict[int, dict[str, BaseDistribution]] = defaultdict(dict)
    for _, trial_id, name, value, dist_json in sorted(param_rows):  # in param_id order
        distribution = _distribution(dist_json)
        params[trial_id][name] = distribution.to_external_repr(value)
        dists[trial_id][name] = distribution
    loaded = []
    for row in rows:
        trial_id = row.trial_id
        objective_values = values.get(trial_id)
        loaded.append(
            FrozenTrial(
                number=row.number,
                state=row.state,
                value=None,
                values=[objective_values[k] for k in sorted(objective_values)]
                if objective_values
                else None,
                datetime_start=_local(row.datetime_start),
                datetime_complete=_local(row.datetime_complete),
                params=params.get(trial_id, {}),
                distributions=dists.get(trial_id, {}),
                user_attrs=user_attrs.get(trial_id, {}),
                system_attrs=system_attrs.get(trial_id, {}),
                intermediate_values=steps.get(trial_id, {}),
                trial_id=trial_id,
            )
        )
    return loaded


@functools.lru_cache(maxsize=1024)
def _distribution(dist_json: str) -> BaseDistribution:
    # A study's trials share a few distributions; parse each JSON text once.
    return json_to_distribution(dist_json)


def _local(value: datetime | None) -> datetime | None:
    # Stored as naive UTC; Optuna hands out naive local time, and so do we.
    if value is None:
        return None
    offset = _hour_offset(value.year, value.month, value.day, value.hour)
    if offset is None:
        return value.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)
    return value + offset


@functools.lru_cache(maxsize=4096)
def _hour_offset(year: int, month: int, day: int, hour: int) -> timedelta | None:
    """The local UTC offset throughout this UTC hour, or None if it changes within it (or
    the local times are a repeated, ``fold=1`` hour): ``astimezone`` asks the C library
    for every value otherwise, which a page of trials pays hundreds of times."""
    start = datetime(year, month, day, hour, tzinfo=UTC)
    first = start.astimezone()
    last = (start + timedelta(minutes=59, seconds=59, microseconds=999_999)).astimezone()
    if first.utcoffset() != last.utcoffset() or first.fold or last.fold:
        return None
    return first.utcoffset()


def best_values(
    connection: sa.engine.Connection, maximize: Iterable[int], minimize: Iterable[int]
) -> dict[int, float]:
    """The best first-objective value of each study's COMPLETE trials of automl's
    (``AUTOML_TRIAL``), by study id (one query for both directions)."""
    maximize, minimize = set(maximize), set(minimize)
    study_ids = sorted(maximize | minimize)
    if not study_ids:
        return {}
    rows = connection.execute(best_values_query(connection, study_ids)).all()
    return pick_best(rows, maximize)


def best_values_query(connection: sa.engine.Connection, study_ids: Sequence[int]) -> sa.Select[Any]:
    """Rows of (study_id, highest, lowest) first-objective values of COMPLETE trials of
    automl's (``AUTOML_TRIAL``)."""
    value = trial_values.c.value
    return (
        sa.select(trials.c.study_id, sa.func.max(value), sa.func.min(value))
        .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
        .where(
            among(connection, trials.c.study_id, study_ids),
            *_RANKED,
        )
        .group_by(trials.c.study_id)
    )


def pick_best(rows: Iterable[Sequence[Any]], maximize: Collection[int]) -> dict[int, float]:
    """Each study's best value from ``best_values_query`` rows (the rest: minimized)."""
    best: dict[int, float] = {}
    for study_id, highest, lowest in rows:
        found = highest if study_id in maximize else lowest
        if found is not None:
            best[study_id] = float(found)
    return best


def _ranked(
    column: sa.ColumnElement[Any],
    study_id: int,
    maximize: bool,
    limit: int,
    *more: sa.ColumnElement[Any],
) -> sa.Select[Any]:
    """``column`` (and ``more``) of the study's ``limit`` best COMPLETE trials of automl's
    (``AUTOML_TRIAL``) on its first objective, best first (ties: the lower trial number
    first)."""
    value = trial_values.c.value
    return (
        sa.select(column, *more)
        .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            *_RANKED,
        )
        .order_by(value.desc() if maximize else value.asc(), trials.c.number)
        .limit(limit)
    )


def best_trial_id(connection: sa.engine.Connection, study_id: int, maximize: bool) -> int | None:
    """The id of the study's best COMPLETE trial of automl's on its only objective (ORDER
    BY ... LIMIT 1, as ``_ranked`` ranks them)."""
    return connection.scalar(_ranked(trials.c.trial_id, study_id, maximize, 1))


def best_trial_number(
    connection: sa.engine.Connection, study_id: int, maximize: bool
) -> int | None:
    """The number of the study's best COMPLETE trial of automl's on its only objective (as
    ``best_trial_id``)."""
    return connection.scalar(_ranked(trials.c.number, study_id, maximize, 1))


def top_ranked(
    connection: sa.engine.Connection, study_id: int, maximize: bool, limit: int
) -> list[tuple[int, float, int]]:
    """Id, value and number of the study's ``limit`` best COMPLETE trials of automl's on
    its first objective, best first, as ``top_trial_ids`` ranks them."""
    query = _ranked(trials.c.trial_id, study_id, maximize, limit, trial_values.c.value)
    query = query.add_columns(trials.c.number)
    return [(int(i), float(v), int(n)) for i, v, n in connection.execute(query)]


def count_still_ranked(
    connection: sa.engine.Connection, study_id: int, ranked: Sequence[tuple[int, float, int]]
) -> int:
    """How many of ``ranked`` (as ``top_ranked`` gave them) are still COMPLETE trials of
    automl's (``AUTOML_TRIAL``) in the study with that number and first value: one
    primary-key lookup each."""
    if not ranked:
        return 0
    query = (
        sa.select(trials.c.trial_id, trial_values.c.value, trials.c.number)
        .join(trial_values, trial_values.c.trial_id == trials.c.trial_id)
        .where(
            trials.c.trial_id.in_([trial_id for trial_id, _, _ in ranked]),
            trials.c.study_id == study_id,
            *_RANKED,
        )
    )
    there = {(int(i), float(v), int(n)) for i, v, n in connection.execute(query)}
    return sum(1 for trial in ranked if trial in there)


def top_trial_ids(
    connection: sa.engine.Connection, study_id: int, maximize: bool, limit: int
) -> list[int]:
    """The ids of the study's ``limit`` best COMPLETE trials of automl's on its first
    objective (as ``_ranked`` ranks them)."""
    query = _ranked(trials.c.trial_id, study_id, maximize, limit)
    return [int(trial_id) for trial_id in connection.scalars(query)]


def create_study(
    connection: sa.engine.Connection,
    name: str,
    directions: Sequence[StudyDirection],
    user_attrs: Mapping[str, Any],
) -> int:
    """Creates an Optuna study as ``create_new_study`` does, with user attributes, in the
    caller's transaction; its id.

    One commit makes the study and the attribute that marks it automl's (``created_at``):
    made in two, a submit whose second commit failed (a cut connection) left an Optuna
    study that nothing marked, and that the reaper therefore never removed (a tester's 196
    empty studies in optuna-dashboard).

    Raises:
        sqlalchemy.exc.IntegrityError: If an Optuna study has the name.
    """
    study_id = connection.execute(
        studies.insert().values(study_name=name).returning(studies.c.study_id)
    ).scalar_one()
    connection.execute(
        study_directions.insert(),
        [
            {"direction": direction, "study_id": study_id, "objective": objective}
            for objective, direction in enumerate(directions)
        ],
    )
    put_study_attrs(connection, study_id, user_attrs)
    return int(study_id)


def taken_study_names(connection: sa.engine.Connection, names: Iterable[str]) -> set[str]:
    """Which of ``names`` already name an Optuna study."""
    query = sa.select(studies.c.study_name).where(studies.c.study_name.in_(list(names)))
    return set(connection.scalars(query))


def study_attr_by_name(connection: sa.engine.Connection, name: str, key: str) -> Any:
    """The user attribute ``key`` of the Optuna study named ``name`` (None if unset)."""
    query = (
        sa.select(study_user_attributes.c.value_json)
        .join(studies, studies.c.study_id == study_user_attributes.c.study_id)
        .where(studies.c.study_name == name, study_user_attributes.c.key == key)
    )
    value = connection.scalar(query)
    return None if value is None else json.loads(value)


def study_attr(connection: sa.engine.Connection, study_id: int, key: str) -> Any:
    """A study's user attribute ``key`` (None if unset)."""
    value = connection.scalar(
        sa.select(study_user_attributes.c.value_json).where(
            study_user_attributes.c.study_id == study_id, study_user_attributes.c.key == key
        )
    )
    return None if value is None else json.loads(value)


def trial_attr(connection: sa.engine.Connection, trial_id: int, key: str) -> Any:
    """A trial's user attribute ``key`` (None if unset)."""
    value = connection.scalar(
        sa.select(trial_user_attributes.c.value_json).where(
            trial_user_attributes.c.trial_id == trial_id, trial_user_attributes.c.key == key
        )
    )
    return None if value is None else json.loads(value)


def trials_with_attr(
    connection: sa.engine.Connection,
    study_id: int,
    key: str,
    states: Collection[TrialState],
) -> list[tuple[int, int, TrialState, Any]]:
    """The study's trials in ``states`` that have the user attribute ``key``.

    Returns:
        ``(trial_id, number, state, value)`` of each, in number order.
    """
    query = (
        sa.select(
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trial_user_attributes.c.value_json,
        )
        .join(trial_user_attributes, trial_user_attributes.c.trial_id == trials.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            trials.c.state.in_(list(states)),
            trial_user_attributes.c.key == key,
        )
        .order_by(trials.c.number)
    )
    return [
        (int(trial_id), int(number), state, json.loads(value))
        for trial_id, number, state, value in connection.execute(query).all()
    ]


def trial_attr_values(connection: sa.engine.Connection, study_id: int, key: str) -> list[Any]:
    """The values of the user attribute ``key`` of the study's trials that have it (one
    query, any state)."""
    query = (
        sa.select(trial_user_attributes.c.value_json)
        .join(trials, trials.c.trial_id == trial_user_attributes.c.trial_id)
        .where(trials.c.study_id == study_id, trial_user_attributes.c.key == key)
    )
    return [json.loads(value) for value in connection.scalars(query)]


def study_system_attr_keys(
    connection: sa.engine.Connection, study_id: int, prefix: str
) -> list[str]:
    """The keys of a study's system attributes that start with ``prefix`` (case counts)."""
    query = sa.select(study_system_attributes.c.key).where(
        study_system_attributes.c.study_id == study_id,
        study_system_attributes.c.key.startswith(prefix, autoescape=True),
    )
    return [key for key in connection.scalars(query) if key.startswith(prefix)]


def other_study_has_system_attr(
    connection: sa.engine.Connection,
    study_id: int,
    key: str,
    ignore: sa.Select[Any] | None = None,
) -> bool:
    """Whether a study other than ``study_id`` (and the ones ``ignore`` selects) has the
    system attribute ``key``: one query over the studies' attributes (a few rows per
    study, none per trial)."""
    query = sa.select(study_system_attributes.c.study_id).where(
        study_system_attributes.c.key == key, study_system_attributes.c.study_id != study_id
    )
    if ignore is not None:
        query = query.where(study_system_attributes.c.study_id.not_in(ignore))
    return connection.execute(query.limit(1)).first() is not None


def trial_system_attr_keys(
    connection: sa.engine.Connection, study_id: int, prefix: str
) -> list[str]:
    """The keys of the study's trials' system attributes that start with ``prefix`` (case
    counts), one query."""
    query = (
        sa.select(trial_system_attributes.c.key)
        .join(trials, trials.c.trial_id == trial_system_attributes.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            trial_system_attributes.c.key.startswith(prefix, autoescape=True),
        )
    )
    # SQLite's LIKE ignores case.
    return [key for key in connection.scalars(query) if key.startswith(prefix)]


def completed_values(connection: sa.engine.Connection, study_id: int) -> dict[int, list[float]]:
    """The objective values of each of the study's COMPLETE trials of automl's with their
    worker's result (``AUTOML_TRIAL``, ``RESULT_RECORDED``), by trial id (one query,
    values only: what a Pareto front needs)."""
    query = (
        sa.select(
            trial_values.c.trial_id,
            trial_values.c.objective,
            trial_values.c.value,
            trial_values.c.value_type,
        )
        .join(trials, trials.c.trial_id == trial_values.c.trial_id)
        .where(
            trials.c.study_id == study_id,
            trials.c.state == TrialState.COMPLETE,
            AUTOML_TRIAL,
            RESULT_RECORDED,
        )
    )
    values: dict[int, dict[int, float]] = defaultdict(dict)
    for trial_id, objective, value, kind in connection.execute(query).all():
        values[int(trial_id)][int(objective)] = _SPECIAL.get(kind, value)
    return {trial_id: [v[k] for k in sorted(v)] for trial_id, v in values.items()}


def optuna_study_exists(connection: sa.engine.Connection, study_id: int) -> bool:
    """Whether Optuna's ``studies`` table has the study automl made under this id: marked
    automl's (``automl.created_at``) at the time automl's row says it was created. A study
    another tool made under the same id once automl's was deleted outside automl (Optuna's
    SQLite table, when Optuna created it, gives a deleted study's id out again) is not,
    nor is a copy of another automl study made there (``optuna.copy_study`` copies the
    mark, with its time): either counts as gone."""
    attributes = study_user_attributes
    found = connection.execute(
        sa.select(attributes.c.value_json, tables.studies.c.created_at)
        .select_from(
            attributes.outerjoin(tables.studies, tables.studies.c.study_id == attributes.c.study_id)
        )
        .where(attributes.c.study_id == study_id, attributes.c.key == attrs.CREATED_AT)
    ).first()
    return found is not None and _is_automls_mark(*found)


def _is_automls_mark(marked: str, created_at: float | None) -> bool:
    """Whether a study's ``automl.created_at`` mark is the one automl wrote for its row
    created at ``created_at`` (see ``optuna_study_exists``)."""
    if created_at is None:
        return True  # no row of automl's to compare with (a submit in flight)
    try:
        at = datetime.fromisoformat(json.loads(marked)).timestamp()
    except (TypeError, ValueError):
        return False  # a mark another tool wrote
    return abs(at - created_at) < MARK_TOLERANCE_S


MARK_TOLERANCE_S = 1e-3
"""How far a study's mark may lie from its row's creation time (both are written from one
time; the mark as ISO 8601 text, in microseconds)."""


def directions_of(
    connection: sa.engine.Connection, study_ids: Sequence[int]
) -> dict[int, tuple[str, ...]]:
    """The directions (``maximize``/``minimize``, by objective) of those of ``study_ids``
    whose Optuna study is the one automl made (``optuna_study_exists``); one query."""
    if not study_ids:
        return {}
    marks = study_user_attributes
    rows = connection.execute(
        sa.select(
            study_directions.c.study_id,
            study_directions.c.direction,
            marks.c.value_json,
            tables.studies.c.created_at,
        )
        .select_from(
            study_directions.join(
                marks,
                sa.and_(
                    marks.c.study_id == study_directions.c.study_id,
                    marks.c.key == attrs.CREATED_AT,
                ),
            ).outerjoin(tables.studies, tables.studies.c.study_id == study_directions.c.study_id)
        )
        .where(among(connection, study_directions.c.study_id, study_ids))
        .order_by(study_directions.c.study_id, study_directions.c.objective)
    ).all()
    directions: dict[int, list[str]] = defaultdict(list)
    for study_id, direction, marked, created_at in rows:
        if _is_automls_mark(marked, created_at):
            directions[study_id].append(direction.name.lower())
    return {study_id: tuple(found) for study_id, found in directions.items()}


def half_created_studies(
    connection: sa.engine.Connection,
    known_ids: sa.Select[Any],
    among: Collection[int] | None = None,
) -> dict[int, Any]:
    """Optuna studies a submit created but never recorded: marked automl's
    (``automl.created_at``), not among ``known_ids``, without a trial and without automl's
    status (a submit writes it in the commit of its row). A copy of an automl study
    (``optuna.copy_study``) or one renamed in optuna-dashboard carries the mark too, and
    its trials or its status keep it from being taken for one.

    Args:
        connection: An open transaction.
        known_ids: The ids of automl's studies (its rows).
        among: Only these studies (None: all).

    Returns:
        The mark's value (the creation time, ISO 8601) by study id.
    """
    attributes = study_user_attributes
    others = sa.alias(attributes)
    query = sa.select(attributes.c.study_id, attributes.c.value_json).where(
        attributes.c.key == attrs.CREATED_AT,
        attributes.c.study_id.not_in(known_ids),
        ~sa.exists().where(trials.c.study_id == attributes.c.study_id),
        # A submit writes the status in the commit of its row, and Optuna's copy keeps it.
        ~sa.exists().where(
            others.c.study_id == attributes.c.study_id, others.c.key == attrs.STATUS
        ),
    )
    if among is not None:
        query = query.where(attributes.c.study_id.in_(list(among)))
    return {study_id: json.loads(value) for study_id, value in connection.execute(query)}


def lock_study_row(connection: sa.engine.Connection, study_id: int) -> None:
    """Holds an Optuna study's row until the transaction ends: no trial of it is created
    meanwhile (PostgreSQL; SQLite's write transaction holds the whole database)."""
    connection.execute(
        sa.select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update()
    ).all()


def lock_trial(connection: sa.engine.Connection, trial_id: int) -> bool:
    """Holds one trial's row until the transaction ends; False if there is none."""
    query = sa.select(trials.c.trial_id).where(trials.c.trial_id == trial_id).with_for_update()
    return connection.execute(query).first() is not None


def lock_trials(connection: sa.engine.Connection, study_id: int) -> None:
    """Holds the rows of a study's trials until the transaction ends: no trial is changed,
    and no row of a trial added, meanwhile."""
    connection.execute(
        sa.select(trials.c.trial_id).where(trials.c.study_id == study_id).with_for_update()
    ).all()


def delete_study(connection: sa.engine.Connection, study_id: int) -> None:
    """Deletes an Optuna study with its trials and every row of theirs, a statement per
    table (Optuna's ``delete_study`` deletes row by row through its ORM: about six
    statements per trial). Nothing happens if the study is not there."""
    of_study = sa.select(trials.c.trial_id).where(trials.c.study_id == study_id)
    for table in TRIAL_ROWS:
        connection.execute(table.delete().where(table.c.trial_id.in_(of_study)))
    connection.execute(trials.delete().where(trials.c.study_id == study_id))
    for table in STUDY_ROWS:
        connection.execute(table.delete().where(table.c.study_id == study_id))
    connection.execute(studies.delete().where(studies.c.study_id == study_id))


def drop_trial_attr_if(
    connection: sa.engine.Connection, trial_id: int, key: str, value: Any
) -> bool:
    """Deletes a trial's user attribute ``key`` if it still holds ``value`` (compare-and-set:
    of several callers, exactly one gets True)."""
    deleted = connection.execute(
        trial_user_attributes.delete().where(
            trial_user_attributes.c.trial_id == trial_id,
            trial_user_attributes.c.key == key,
            trial_user_attributes.c.value_json == json.dumps(value),
        )
    )
    return deleted.rowcount > 0


def drop_trial_system_attr(connection: sa.engine.Connection, trial_id: int, key: str) -> None:
    """Deletes a trial's system attribute ``key`` (such as an artifact's record, which
    Optuna's API can add but not remove)."""
    connection.execute(
        trial_system_attributes.delete().where(
            trial_system_attributes.c.trial_id == trial_id,
            trial_system_attributes.c.key == key,
        )
    )
