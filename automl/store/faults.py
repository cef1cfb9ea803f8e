"""Database faults: which errors are worth retrying, and how to wait between tries.

A database restart, a dropped connection (``pg_terminate_backend``) or a network cut shows
up as a SQLAlchemy ``OperationalError``/``InterfaceError`` (or a ``DBAPIError`` whose
connection was invalidated), or as Optuna's ``StorageInternalError`` wrapping one of
those. They are *transient*: the same call succeeds once the database is back. Anything
else (an integrity error, a bug) is not, and is never retried.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import sqlalchemy
from optuna.exceptions import StorageInternalError

T = TypeVar("T")

TRANSIENT_GRPC_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Status codes of ``automl proxy`` (or Optuna's storage proxy) that mean "try again"."""

DATABASE_FAULT_HINTS = (
    "OperationalError",
    "InterfaceError",
    "An exception is raised during the commit",  # Optuna's StorageInternalError
)
"""Optuna's storage proxy reports a database fault only as text (status UNKNOWN)."""

REFUSED_FOR_GOOD = re.compile(
    r'(database|role) "[^"]*" does not exist'
    r"|password authentication failed"
    r"|no pg_hba\.conf entry"
    r"|(peer|ident|sspi|gss|cert|ldap|radius|pam) authentication failed"
    r"|no password supplied",
    re.IGNORECASE,
)
"""What PostgreSQL answers to a connection that no retry will let in: no such database or
role, or a failed authentication. libpq reports it as text only (psycopg's ``sqlstate`` is
None for a connection that never opened), so the text is matched."""

LOG_INTERVAL_S = 30.0
"""A waiting process logs the database outage at most once per this many seconds."""


class StorageUnavailableError(RuntimeError):
    """The database could not be reached (after retrying where that is safe)."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""A full disk or quota: the storage is unavailable until someone frees space."""


DISK_FULL_SQLSTATE = "53100"
"""PostgreSQL's ``disk_full``."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a full disk or quota: of the
    artifact store (``ENOSPC``), of SQLite's file (``SQLITE_FULL``) or of PostgreSQL."""
    return any(_disk_full(error) for error in _causes(exc))


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return True
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(error, "sqlstate", None) == DISK_FULL_SQLSTATE  # psycopg's errors


READ_ONLY_SQLSTATE = "25006"
"""PostgreSQL's ``read_only_sql_transaction``: a standby server, or a database set
read-only."""


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a write the database refused as
    read-only: SQLite's file or folder may not be written (permissions, a read-only
    mount), or PostgreSQL answered from a standby. An outage to wait out, with a reason
    that says what to fix."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # what it was raised from only
        seen.add(id(current))
        if _read_only(current):
            return True
        orig = getattr(current, "orig", None)  # the driver's error SQLAlchemy wraps
        current = current.__cause__ or (orig if isinstance(orig, BaseException) else None)
    return False


def _read_only(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_READONLY
    return getattr(error, "sqlstate", None) == READ_ONLY_SQLSTATE


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the errors it was raised from, and the driver's error SQLAlchemy wraps."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = (current.__cause__, current.__context__, getattr(current, "orig", None))
        pending.extend(error for error in linked if isinstance(error, BaseException))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage was unavailable (the database unreachable, or a
    disk full) rather than the request wrong."""
    if is_read_only(exc):  # PostgreSQL's is no OperationalError
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _disk_full(current):
            return True
        if isinstance(current, StorageUnavailableError | sqlalchemy.exc.TimeoutError):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError):
            if is_refused_for_good(current):
                return False
            return current.connection_invalidated or isinstance(
                current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
            )
        if isinstance(current, sqlalchemy.exc.DisconnectionError):
            return True
        if isinstance(current, sqlalchemy.exc.PendingRollbackError):
            # A connection dropped mid-transaction and then used again in it (Optuna's
            # trial query does, taking the drop for too many IN variables): the same work
            # succeeds on a new transaction. Other pending rollbacks (a failed flush) do not.
            return current.code == INVALIDATED_IN_A_TRANSACTION
        if isinstance(current, grpc.RpcError):
            return _is_transient_grpc(current)
        if not isinstance(current, StorageInternalError):
            return False
        current = current.__cause__ or current.__context__
    return False


INVALIDATED_IN_A_TRANSACTION = "8s2b"
"""SQLAlchemy's code of "Can't reconnect until invalid transaction is rolled back"."""

LOCK_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
"""PostgreSQL's ``deadlock_detected`` and ``serialization_failure``: the transaction was
ended to let another go on, and the same work succeeds when tried again."""


LOCK_TIMEOUT_SQLSTATES = frozenset({"55P03"})
"""PostgreSQL's ``lock_not_available``: a statement waited ``lock_timeout`` for a lock."""


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) is a statement that waited out its lock
    timeout (an outage: the lock's holder may keep it for long)."""
    return _has_sqlstate(exc, LOCK_TIMEOUT_SQLSTATES)


def is_lock_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) is a deadlock or serialization conflict."""
    return _has_sqlstate(exc, LOCK_CONFLICT_SQLSTATES)


def _has_sqlstate(exc: BaseException, states: frozenset[str]) -> bool:
    return any(getattr(error, "sqlstate", None) in states for error in _causes(exc))


SCHEMA_MISSING = "storage schema missing"
"""What a database that lacks automl's or Optuna's tables is reported as (API, CLI)."""

UNDEFINED_TABLE_SQLSTATE = "42P01"
"""PostgreSQL's ``undefined_table``."""


def is_schema_missing(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from or wraps) says a table is not there:
    SQLite's "no such table", PostgreSQL's ``undefined_table``. Someone dropped or renamed
    automl's or Optuna's tables under a running process (or pointed it at another database):
    no retry helps, and no request is at fault."""
    return any(
        (isinstance(error, sqlite3.OperationalError) and str(error).startswith("no such table"))
        or getattr(error, "sqlstate", None) == UNDEFINED_TABLE_SQLSTATE  # psycopg's errors
        for error in _causes(exc)
    )


def is_refused_for_good(exc: BaseException) -> bool:
    """Whether the database refused the connection for a reason that retrying cannot fix:
    the database or the role does not exist, or the authentication failed (a setting to
    correct, not an outage)."""
    return any(
        REFUSED_FOR_GOOD.search(str(error)) is not None
        for error in _causes(exc)
        # SQLAlchemy's own text repeats the statement and its parameters: only the driver's
        # message is matched.
        if not isinstance(error, sqlalchemy.exc.SQLAlchemyError)
    )


def _is_transient_grpc(exc: grpc.RpcError) -> bool:
    code = exc.code()  # type: ignore[attr-defined]
    if code in TRANSIENT_GRPC_CODES:
        return True
    details = exc.details() or ""  # type: ignore[attr-defined]
    return code == grpc.StatusCode.UNKNOWN and any(h in details for h in DATABASE_FAULT_HINTS)


class Backoff:
    """Exponential backoff with jitter, and an outage log written once per interval.

    Args:
        logger: Where to report the outage.
        first: First delay in seconds.
        cap: Longest delay in seconds.
        log_interval: Seconds between two log lines about the same outage.
    """

    def __init__(
        self,
        logger: logging.Logger,
        first: float = 0.2,
        cap: float = 5.0,
        log_interval: float = LOG_INTERVAL_S,
    ) -> None:
        self.logger = logger
        self.first, self.cap, self.log_interval = first, cap, log_interval
        self.failures = 0
        self._last_log = -float("inf")
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, doing: str) -> float:
        """Records a transient failure; returns how long to wait before the next try."""
        with self._lock:
            self.failures += 1
            now = time.monotonic()
            if now - self._last_log >= self.log_interval:
                self._last_log = now
                self.logger.warning(
                    "storage unavailable while %s (%d failed tries so far), retrying: %s",
                    doing,
                    self.failures,
                    first_line(exc),
                )
            delay = min(self.cap, self.first * 2 ** min(self.failures - 1, 16))
        return delay * (0.5 + random.random() / 2)

    def succeeded(self) -> None:
        """Records a success; the next failure starts a new outage."""
        with self._lock:
            if self.failures:
                self.logger.info("storage reachable again after %d failed tries", self.failures)
            self.failures = 0
            self._last_log = -float("inf")


def retry_transient(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    doing: str,
    give_up: Callable[[], bool] = lambda: False,
    wait: Callable[[float], object] = time.sleep,
    attempts: int | None = None,
) -> T:
    """Calls ``call`` until it succeeds or fails with a non-transient error.

    Only for calls that are safe to repeat (reads, heartbeats, compare-and-set writes
    that tolerate having already happened).

    Args:
        call: The operation.
        backoff: Delays and logging.
        doing: What the call does, for the log ("claiming a trial").
        give_up: Checked before each retry; True re-raises the last error.
        wait: Sleeps between tries (an ``Event.wait`` makes them interruptible).
        attempts: Give up after this many tries (``None``: never).

    Raises:
        The last error, when it is not transient, when ``give_up()`` or when out of attempts.
    """
    tries = 0
    while True:
        tries += 1
        try:
            result = call()
        except Exception as exc:
            if not is_transient(exc) or give_up() or (attempts is not None and tries >= attempts):
                raise
            wait(backoff.failed(exc, doing))
            continue
        backoff.succeeded()
        return result


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (SQLAlchemy messages run over many lines); for
    Optuna's ``StorageInternalError``, whose text never says what failed, its cause's."""
    if isinstance(exc, StorageInternalError) and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
