"""automl's own tables, next to Optuna's in the same database (SQLAlchemy Core).

Optuna's schema stays the source of truth for trials (params, values, curves, attributes);
these tables hold only what Optuna cannot change atomically:

- ``automl_studies``: one row per study (id = Optuna's study id) with its lifecycle status
  and its budget counters. Every change is a compare-and-set ``UPDATE``.
- ``automl_tickets``: one row per logical trial, i.e. per budget unit that was handed out
  or enqueued. A worker holds a ticket under a lease (worker id + attempt) while it runs
  an Optuna trial for it; a lost lease puts the ticket back in the queue.
- ``automl_evaluations``: one row per completed study whose best trial(s) are due for
  (or had) their one evaluation on the test split; claimed by compare-and-set.
- ``automl_refits``: one row per study whose best configuration is (or was) to be
  retrained on train + validation and scored on the test split; claimed the same way.
- ``automl_artifacts``/``automl_artifact_chunks``: the SQL artifact store.

All times are seconds since the epoch, read from the database clock (``db_now()``), so
workers on machines with skewed clocks agree on heartbeat ages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

# Re-exported: the states live in attrs, which thin clients import without SQLAlchemy.
from automl.store.attrs import EvaluationState, RefitState  # noqa: F401

metadata = sa.MetaData()


class TicketState(StrEnum):
    """Where a logical trial is: queued, held by a worker, ended, or dropped."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class TicketSource(StrEnum):
    """Who created a ticket."""

    SAMPLER = "sampler"  # a fresh budget unit; the sampler proposes the params
    GRID = "grid"  # a fresh budget unit of a grid study: its own cell
    ENQUEUED = "enqueued"  # a configuration given by the user
    WARM_START = "warm_start"  # a top configuration of an earlier study


DELETING = "deleting"
"""Internal study status while its rows and artifacts are being removed (never listed)."""

studies = sa.Table(
    "automl_studies",
    metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(512), nullable=False),
    sa.Column("project", sa.String(128), nullable=False, server_default="default"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_reason", sa.Text),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("issued", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_retries", sa.Integer, nullable=False),
    sa.Column("max_failed", sa.Integer, nullable=False),
    sa.Column("failure_limit", sa.Integer, nullable=False),
    sa.Column("timeout", sa.Float),
    sa.Column("deadline", sa.Float),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("dataset_fingerprint", sa.String(64)),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_automl_studies_status", "status"),
    sa.Index("ix_automl_studies_project", "project", "status"),
    sa.Index("ix_automl_studies_project_name", "project", "name"),
    # A project's key names one submission; another project may use the same key.
    sa.UniqueConstraint("project", "idempotency_key", name="uq_automl_studies_idempotency"),
    sa.Index("ix_automl_studies_fingerprint", "dataset_fingerprint", "status"),
)

tickets = sa.Table(
    "automl_tickets",
    metadata,
    sa.Column("ticket_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_id", sa.Integer, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("params", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16)),
    sa.Column("failure", sa.String(32)),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("trial_id", sa.Integer),
    sa.Column("trial_number", sa.Integer),
    sa.Column("worker_id", sa.String(256)),
    sa.Column("heartbeat_at", sa.Float),
    sa.Column("checkpoint", sa.String(256)),
    sa.Column("checkpoint_epoch", sa.Integer),
    sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    # Covers the per-state counts (GROUP BY state, outcome) and the EXISTS checks.
    sa.Index("ix_automl_tickets_study_state", "study_id", "state", "outcome"),
    sa.Index("ix_automl_tickets_state_heartbeat", "state", "heartbeat_at"),
    sa.Index("ix_automl_tickets_study_failure", "study_id", "failure"),
)
# The claim's next pending ticket (WHERE study_id, state ORDER BY priority DESC, ticket_id
# LIMIT 1) read in index order, not by sorting every pending ticket of the study.
sa.Index(
    "ix_automl_tickets_claim",
    tickets.c.study_id,
    tickets.c.state,
    tickets.c.priority.desc(),
    tickets.c.ticket_id,
)

evaluations = sa.Table(
    "automl_evaluations",
    metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(256)),
    sa.Column("claimed_at", sa.Float),
    sa.Column("trials", sa.Text),
    sa.Column("note", sa.Text),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_automl_evaluations_state", "state", "claimed_at"),
)
"""``attempt`` counts every claim ever (a claim's identity, like a ticket's lease);
``tries`` counts the claims of the current request (a completion of the study)."""

refits = sa.Table(
    "automl_refits",
    metadata,
    sa.Column("study_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(256)),
    sa.Column("claimed_at", sa.Float),
    sa.Column("trial_number", sa.Integer),
    sa.Column("result", sa.Text),
    sa.Column("weights", sa.String(256)),
    sa.Column("card", sa.String(256)),
    sa.Column("note", sa.Text),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_automl_refits_state", "state", "claimed_at"),
)
"""``attempt`` and ``tries`` as in ``automl_evaluations``; ``claimed_at`` is renewed by the
claimer's beats while it trains. ``weights`` and ``card`` name the artifacts of the
latest result (kept until a newer result replaces them or the study is deleted);
``result`` is its JSON (``RefitResult``), mirrored into the ``automl.refit`` attribute."""

api_keys = sa.Table(
    "automl_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("project", sa.String(128), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("label", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Index("ix_automl_api_keys_revoked", "revoked_at"),
)

artifacts = sa.Table(
    "automl_artifacts",
    metadata,
    sa.Column("artifact_id", sa.String(256), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

artifact_chunks = sa.Table(
    "automl_artifact_chunks",
    metadata,
    sa.Column("artifact_id", sa.String(256), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


class db_now(FunctionElement[float]):
    """The database's current time in seconds since the epoch (a float)."""

    type = sa.Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now)
def _db_now_default(element: db_now, compiler: Any, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())"


def create_tables(engine: sa.engine.Engine) -> None:
    """Creates automl's tables and indexes that do not exist yet, and brings those an
    earlier version created up to date (idempotent; never touches Optuna's tables).

    An index of an automl table that is missing is created; one whose columns or
    uniqueness differ from its definition here (it was widened under the same name) is
    dropped and created again. ``automl_studies`` also gets its per-project idempotency
    constraint (PostgreSQL). Reading the schema is all this does when it is current.

    Workers and the API start at once: the changes are made under a lock (SQLite's write
    lock, a PostgreSQL advisory lock) after reading the schema again, and a change that
    fails because another process, holding no such lock, made it first is not an error.
    Building an index blocks writes to its table until it is built (once per upgrade:
    seconds for a million tickets). An index that changes shape gets a new name, so that
    processes of two versions running side by side do not rebuild it back and forth.
    """
    metadata.create_all(engine, checkfirst=True)
    if not _schema_gaps(sa.inspect(engine)):
        return
    try:
        with engine.begin() as connection:
            _lock_schema(connection)
            _upgrade(connection, _schema_gaps(sa.inspect(connection)))
    except sa.exc.DBAPIError:
        if _schema_gaps(sa.inspect(engine)):
            raise
        # else another process made the same changes at the same moment


_IDEMPOTENCY_CONSTRAINT = "uq_automl_studies_idempotency"
_OLD_IDEMPOTENCY_CONSTRAINT = "automl_studies_idempotency_key_key"
_SCHEMA_LOCK = 0x6175746F6D6C  # "automl": the advisory lock of schema changes (PostgreSQL)


@dataclass
class _Gaps:
    """How the database's automl tables differ from their definitions here.

    Attributes:
        missing: Indexes to create.
        changed: Indexes there under the same name but on other columns: drop, create.
        stale: (PostgreSQL) The old cross-project idempotency constraint is there.
        unscoped: (PostgreSQL) The per-project idempotency constraint is not.
    """

    missing: list[sa.Index] = field(default_factory=list)
    changed: list[sa.Index] = field(default_factory=list)
    stale: bool = False
    unscoped: bool = False

    def __bool__(self) -> bool:
        return bool(self.missing or self.changed or self.stale or self.unscoped)


def _schema_gaps(inspector: sa.Inspector) -> _Gaps:
    """What automl's tables lack (one catalog read for all indexes where supported)."""
    gaps = _Gaps()
    found = inspector.get_multi_indexes(filter_names=list(metadata.tables))
    for table in metadata.sorted_tables:
        there = {index["name"]: index for index in found.get((None, table.name), [])}
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            if index.name not in there:
                gaps.missing.append(index)
            elif _shape(there[index.name]) != _expected_shape(index):
                gaps.changed.append(index)
    if inspector.dialect.name == "postgresql":
        uniques = {unique["name"] for unique in inspector.get_unique_constraints(studies.name)}
        gaps.stale = _OLD_IDEMPOTENCY_CONSTRAINT in uniques
        gaps.unscoped = _IDEMPOTENCY_CONSTRAINT not in uniques
    return gaps


def _shape(reflected: Any) -> tuple[list[str | None], bool]:
    """An index as the inspector reports it: its column names and whether it is unique
    (SQLite does not report a column's sort order: change that under a new name)."""
    return list(reflected["column_names"]), bool(reflected["unique"])


def _expected_shape(index: sa.Index) -> tuple[list[str | None], bool]:
    return [column.name for column in index.columns], bool(index.unique)


def _lock_schema(connection: sa.engine.Connection) -> None:
    """Serializes schema changes with other processes until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
    elif connection.dialect.name == "sqlite" and not connection.connection.in_transaction:
        # Unless the engine's own "begin" hook took it already (the store's does later).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade(connection: sa.engine.Connection, gaps: _Gaps) -> None:
    """Closes ``gaps`` (read under the lock) in the caller's transaction.

    On SQLite a table from before keeps its old idempotency key unique across projects
    (dropping it means rebuilding the table): there a key reused by another project is
    refused, as it was.
    """
    for index in gaps.changed:
        connection.execute(sa.text(f"DROP INDEX IF EXISTS {index.name}"))
    for index in [*gaps.changed, *gaps.missing]:
        index.create(connection, checkfirst=True)
    if gaps.stale:
        connection.execute(
            sa.text(
                f"ALTER TABLE {studies.name} "
                f"DROP CONSTRAINT IF EXISTS {_OLD_IDEMPOTENCY_CONSTRAINT}"
            )
        )
    if gaps.unscoped:
        connection.execute(
            sa.text(
                f"ALTER TABLE {studies.name} ADD CONSTRAINT "
                f"{_IDEMPOTENCY_CONSTRAINT} UNIQUE (project, idempotency_key)"
            )
        )
