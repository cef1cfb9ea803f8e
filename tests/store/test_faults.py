"""Which database errors count as transient, and how waiting for them is logged."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.study import StudyDirection

from automl.store import (
    Backoff,
    StorageUnavailableError,
    is_disk_full,
    is_transient,
    retry_transient,
)
from automl.store.faults import first_line, is_read_only, is_refused_for_good


def _operational() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))


def _dropped_mid_transaction() -> sqlalchemy.exc.PendingRollbackError:
    """What a connection invalidated in a transaction answers its next statement."""
    return sqlalchemy.exc.PendingRollbackError("Can't reconnect until ...", code="8s2b")


def _failed_flush() -> sqlalchemy.exc.PendingRollbackError:
    """What a session whose flush failed (a bad row, say) answers its next statement."""
    return sqlalchemy.exc.PendingRollbackError("rolled back during flush", code="7s2a")


def _wrapped_by_optuna(cause: BaseException) -> StorageInternalError:
    try:
        raise StorageInternalError("An exception is raised during the commit.") from cause
    except StorageInternalError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_operational(), True),
        (sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("closed")), True),
        (sqlalchemy.exc.TimeoutError("pool exhausted"), True),
        (_wrapped_by_optuna(_operational()), True),
        (_wrapped_by_optuna(_dropped_mid_transaction()), True),
        (_wrapped_by_optuna(_failed_flush()), False),
        (StorageUnavailableError("down"), True),
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")), False),
        (_wrapped_by_optuna(ValueError("too long")), False),
        (KeyError("no such study"), False),
        (OSError(errno.ENOSPC, "No space left on device"), True),  # a full artifact store
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.ENOENT, "No such file"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_backoff_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff(logging.getLogger("test.backoff"), first=0.01, cap=0.05, log_interval=3600)
    with caplog.at_level(logging.INFO, logger="test.backoff"):
        delays = [backoff.failed(_operational(), "claiming") for _ in range(10)]
        backoff.succeeded()
        backoff.failed(_operational(), "claiming")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per outage, not one per attempt
    assert "storage unavailable while claiming" in warnings[0].getMessage()
    assert any("reachable again after 10" in r.getMessage() for r in caplog.records)
    assert all(0 < delay <= 0.05 for delay in delays)


def test_retry_transient_retries_only_transient_errors() -> None:
    backoff = Backoff(logging.getLogger("test.retry"), first=0.001, cap=0.001)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise _operational()
        return "ok"

    assert retry_transient(flaky, backoff=backoff, doing="x") == "ok"
    assert calls["n"] == 3

    def broken() -> None:
        calls["n"] += 1
        raise ValueError("bug")

    calls["n"] = 0
    with pytest.raises(ValueError):
        retry_transient(broken, backoff=backoff, doing="x")
    assert calls["n"] == 1

    def down() -> None:
        raise _operational()

    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_transient(down, backoff=backoff, doing="x", attempts=3)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_transient(down, backoff=backoff, doing="x", give_up=lambda: True)


def test_first_line_of_optunas_wrapper_is_its_causes() -> None:
    """Once "An exception is raised during the commit..." for a read-only database."""
    readonly = sqlalchemy.exc.OperationalError(
        "UPDATE", {}, Exception("attempt to write a readonly database\nmore")
    )
    assert "attempt to write a readonly database" in first_line(_wrapped_by_optuna(readonly))
    assert "\n" not in first_line(_wrapped_by_optuna(readonly))
    assert first_line(StorageInternalError("alone")) == "alone"


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (_wrapped_by_optuna(OSError(errno.EDQUOT, "Disk quota exceeded")), True),
        (_operational(), False),
    ],
)
def test_is_disk_full(error: BaseException, full: bool) -> None:
    assert is_disk_full(error) is full


def test_a_full_sqlite_database_is_a_full_disk(tmp_path: Path) -> None:
    """SQLite says SQLITE_FULL, not ENOSPC: once a stopping worker waited on it forever."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'small.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x TEXT)")
    with pytest.raises(sqlalchemy.exc.OperationalError) as full, engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA max_page_count = 2")  # a disk of two pages
        for _ in range(100):
            connection.exec_driver_sql("INSERT INTO t VALUES (?)", ("x" * 1000,))
    engine.dispose()
    assert is_disk_full(full.value) and is_transient(full.value)
    assert is_disk_full(_wrapped_by_optuna(full.value))


def test_a_write_refused_as_read_only_is_an_outage_that_says_so(tmp_path: Path) -> None:
    """Found by a tester: a SQLite file the API may not write answered every write with
    "storage unavailable" and nothing else. SQLite's ``SQLITE_READONLY`` and PostgreSQL's
    ``read_only_sql_transaction`` (a standby) are outages with that reason."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'ro.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x TEXT)")
    with pytest.raises(sqlalchemy.exc.OperationalError) as refused, engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA query_only = ON")
        connection.exec_driver_sql("INSERT INTO t VALUES ('x')")
    engine.dispose()
    assert is_read_only(refused.value) and is_transient(refused.value)
    assert is_read_only(_wrapped_by_optuna(refused.value))
    assert not is_read_only(_operational()) and not is_disk_full(refused.value)

    class StandbyError(Exception):
        sqlstate = "25006"  # as psycopg's ReadOnlySqlTransaction carries it

    standby = sqlalchemy.exc.InternalError("INSERT", {}, StandbyError("read-only transaction"))
    standby.__cause__ = standby.orig
    assert is_read_only(standby) and is_transient(standby)
    try:  # an error raised while handling one is not what it handled (a reviewer)
        try:
            raise refused.value
        except sqlalchemy.exc.OperationalError:
            raise ValueError("a bug in the handler") from None
    except ValueError as unrelated:
        assert not is_read_only(unrelated) and not is_transient(unrelated)


def _connect_error(text: str) -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises when psycopg cannot connect, libpq's ``text`` inside."""
    return sqlalchemy.exc.OperationalError(None, None, Exception(f"connection failed: {text}"))


@pytest.mark.parametrize(
    "text",
    [
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "nodb" does '
        "not exist",
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "nobody" does not '
        "exist",
        'FATAL:  password authentication failed for user "automl"',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.2", user "automl", database "automl"',
        'FATAL:  Peer authentication failed for user "automl"',
        "fe_sendauth: no password supplied",
    ],
)
def test_a_refused_login_is_not_transient(text: str) -> None:
    """Once retried forever by ``automl worker`` as if the database were restarting."""
    error = _connect_error(text)

    assert is_refused_for_good(error)
    assert not is_transient(error)
    assert not is_transient(_wrapped_by_optuna(error))


def test_an_outage_is_transient_whatever_the_statement_says() -> None:
    """Only the driver's message is matched, not the statement SQLAlchemy repeats."""
    error = sqlalchemy.exc.OperationalError(
        "SELECT 'database \"x\" does not exist'", {}, Exception("server closed the connection")
    )
    refused = _connect_error('connection to server at "127.0.0.1", port 1 failed: refused')

    assert not is_refused_for_good(error) and is_transient(error)
    assert not is_refused_for_good(refused) and is_transient(refused)


@pytest.mark.postgres
def test_a_connection_dropped_inside_optunas_trial_query_is_transient(postgres_url: str) -> None:
    """Optuna's trial query takes a dropped connection for too many ``IN`` variables and
    runs again in the same transaction: SQLAlchemy's "Can't reconnect until invalid
    transaction is rolled back", which once failed a trial as a bug (a CI run under load)."""
    storage = optuna.storages.RDBStorage(postgres_url)
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "dropped")
    dropped: list[int] = []

    def drop_the_connection(_conn: object, cursor: Any, statement: str, *_: object) -> None:
        if "FROM trials" in statement and not dropped:
            dropped.append(cursor.connection.info.backend_pid)
            with admin.connect() as connection:
                terminate = sqlalchemy.text("SELECT pg_terminate_backend(:pid)")
                connection.execute(terminate, {"pid": dropped[0]})

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", drop_the_connection)
    try:
        with pytest.raises(StorageInternalError) as info:
            storage.get_all_trials(study_id)
        assert dropped
        assert isinstance(info.value.__cause__, sqlalchemy.exc.PendingRollbackError)
        assert is_transient(info.value), first_line(info.value)
        assert storage.get_all_trials(study_id) == []  # the next transaction works
    finally:
        storage.engine.dispose()
        admin.dispose()
