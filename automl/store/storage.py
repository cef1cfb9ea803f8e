"""The Optuna RDB storage: SQLite by default, PostgreSQL for many machines."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy import event

from automl.config import DEFAULT_STORAGE

SQLITE_BUSY_TIMEOUT_S = 60
SCHEMA_RACE_RETRIES = 3


class StorageError(RuntimeError):
    """The storage URL is malformed or its database cannot be reached."""


class NoQueuedTrialError(LookupError):
    """A study has no WAITING trial left to claim."""


class QueuedTrialStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` where every trial is born WAITING, so ``study.ask()`` only claims.

    Submitting a study enqueues exactly ``n_trials`` WAITING trials. Optuna's
    ``Study.ask`` pops a waiting trial atomically (row lock on PostgreSQL, ``BEGIN
    IMMEDIATE`` on SQLite) and otherwise creates a fresh one; refusing the fresh one here
    is what keeps a budget exact however many workers race for the last trial.
    """

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """Creates a trial from a template (enqueue); refuses a template-less one.

        Overrides the private funnel that both ``create_new_trial`` and Optuna's
        ``_CachedStorage`` call; ``tests/store/test_storage.py`` pins that behaviour.

        Raises:
            NoQueuedTrialError: If called without ``template_trial`` (an ``ask`` that
                found no waiting trial).
        """
        if template_trial is None:
            raise NoQueuedTrialError(f"study {study_id} has no queued trial left")
        return super()._create_new_trial(study_id, template_trial)


def normalize_url(url: str) -> str:
    """Selects the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_storage(url: str | None = None) -> QueuedTrialStorage:
    """Opens (creating if needed) the Optuna storage at ``url``.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions so several
    local processes share one file safely; PostgreSQL gets connection liveness checks.

    Args:
        url: SQLAlchemy URL; defaults to ``sqlite:///automl.db``.

    Raises:
        StorageError: If the URL is malformed or the database cannot be reached.
    """
    url = normalize_url(url or DEFAULT_STORAGE)
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except sqlalchemy.exc.ArgumentError as exc:
        raise StorageError(f"invalid storage URL {url!r}: {exc}") from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        # isolation_level=None stops pysqlite from managing transactions itself, so
        # the "begin" hook below can make every transaction take the write lock first.
        engine_kwargs = {
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}
        }
    storage = _open_with_retries(url, engine_kwargs)
    if backend == "sqlite":
        _make_sqlite_safe_for_processes(storage.engine)
    return storage


def _open_with_retries(url: str, engine_kwargs: dict[str, Any]) -> QueuedTrialStorage:
    # Processes started together on a fresh database race to create the schema; the
    # loser sees "already exists" errors, and a retry then finds the schema in place.
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return QueuedTrialStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == SCHEMA_RACE_RETRIES or not _is_schema_race(exc):
                raise StorageError(
                    f"cannot open storage {_redact(url)}: {_first_line(exc)}"
                ) from None
            time.sleep(0.2 * (attempt + 1))
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot open storage {_redact(url)}: {_first_line(exc)}") from None
    raise AssertionError("unreachable")


def _is_schema_race(exc: sqlalchemy.exc.SQLAlchemyError) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text


def _make_sqlite_safe_for_processes(engine: sqlalchemy.engine.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.engine.Connection) -> None:
        # A deferred transaction that reads, then writes, can lose the claim race or
        # fail with SQLITE_BUSY_SNAPSHOT; taking the write lock up front serializes it.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened during schema setup lack the hooks


def check_connection(storage: optuna.storages.RDBStorage) -> None:
    """Runs a trivial query.

    Raises:
        StorageError: If the database cannot be reached.
    """
    try:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage unreachable: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url
