"""Opening the store: Optuna's RDB storage plus automl's tables and artifact store.

SQLite (the default) gets WAL and a busy timeout so several local processes share one
file. Writers take the write lock when their transaction begins (``BEGIN IMMEDIATE``),
which keeps read-then-write transactions (Optuna's and ours) serialized; readers use a
second engine with plain deferred transactions, so a slow read never blocks a writer.
PostgreSQL gets a connect timeout, TCP keepalives and a TCP user timeout (a connection that
a network cut silenced, with no reset, fails after about 25 s instead of hanging for the
kernel's 15 minutes; a pooler or proxy in between that still acknowledges but no longer
answers is not caught so: its own timeouts must end such waits), a pool of
``AUTOML_DB_POOL_SIZE`` connections, liveness checks of connections that sat idle in the
pool, reads outside of explicit transactions (each statement sees the latest commits, as in
a READ COMMITTED transaction, without the BEGIN and COMMIT round trips) and one engine for
both. The server ends a session that sits inside a transaction for
``PG_IDLE_TRANSACTION_TIMEOUT_S``: a process frozen mid-write (a paused VM, SIGSTOP, a
debugger) would otherwise hold its row locks, and with them every claim, cancel and reaper
pass on that study, for as long as it stays frozen. A statement waits at most
``PG_LOCK_TIMEOUT_S`` for a lock (an administrator's ``LOCK TABLE``, a long migration), then
fails as an outage does, like SQLite's busy timeout. Sessions plan each statement with its
parameters (``plan_cache_mode``), never with a generic plan kept from when the study's
tables were empty. Both are set per session on connect; behind a pooler in transaction mode
(PgBouncer), set them for the role instead (``ALTER ROLE ... SET``). A libpq parameter given
in the URL's query string (``?keepalives_idle=60&tcp_user_timeout=90000``) replaces automl's
default for it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import optuna
import sqlalchemy
from sqlalchemy import event

from automl.config import DEFAULT_STORAGE, Settings
from automl.store import tables
from automl.store.faults import (
    SCHEMA_MISSING,
    StorageUnavailableError,
    first_line,
    is_lock_timeout,
    is_read_only,
    is_refused_for_good,
    is_schema_missing,
    is_transient,
)
from automl.url_secrets import without_password

if TYPE_CHECKING:
    from automl.store.artifacts import ArtifactStore

SQLITE_BUSY_TIMEOUT_S = 60
PG_CONNECT_TIMEOUT_S = 5
PG_KEEPALIVES_IDLE_S = 10
"""Seconds a PostgreSQL connection may sit silent before TCP asks whether the peer is there."""
PG_KEEPALIVES_INTERVAL_S = 5
"""Seconds between two unanswered keepalive probes."""
PG_KEEPALIVES_COUNT = 3
"""Unanswered probes after which the connection is dead (where ``tcp_user_timeout`` is not
supported: 10 + 3 x 5 = 25 s)."""
PG_TCP_USER_TIMEOUT_MS = 25_000
"""Milliseconds sent data may stay unacknowledged (or keepalive probes unanswered) before
Linux ends the connection: what bounds a query sent into a silent network cut, which
keepalives alone do not (they only run while nothing is in flight). A slow query is not
affected: the server's TCP acknowledges it at once."""
DEFAULT_POOL_SIZE = 10
PING_WHEN_IDLE_S = 1.0
"""A pooled PostgreSQL connection unused for longer is checked (a round trip) before use."""
PG_IDLE_TRANSACTION_TIMEOUT_S = 60.0
"""PostgreSQL ends a session idle inside an open transaction for longer (its locks go)."""
PG_LOCK_TIMEOUT_S = 60.0
"""A PostgreSQL statement waits this long for a lock, then fails as an outage would (the
API answers 503, workers wait and try again): SQLite's busy timeout, on PostgreSQL."""
SCHEMA_RACE_RETRIES = 3
READ_RETRY_DELAYS_S = (0.05, 0.2, 0.5)

P = ParamSpec("P")
T = TypeVar("T")


class StorageError(RuntimeError):
    """The storage URL is malformed, or its database cannot be reached or lacks the schema.

    Attributes:
        transient: The database was unreachable (trying again later may succeed).
        bad_config: The settings are at fault (a malformed URL, a database, role, password
            or folder that is not there, an unusable artifact store): correcting them, not
            waiting, is what helps.
    """

    def __init__(self, message: str, transient: bool = False, bad_config: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.bad_config = bad_config


@dataclass(eq=False)
class Store:
    """Everything that lives in the storage database, opened once per process.

    Attributes:
        url: SQLAlchemy URL (driver selected).
        backend: ``sqlite`` or ``postgresql`` (SQLAlchemy's backend name).
        storage: Optuna's storage for writes (and workers' reads).
        reader: Optuna's storage for reads that must not take SQLite's write lock
            (the same object as ``storage`` on PostgreSQL).
        artifacts: Where weights and checkpoints go (an Optuna artifact store).
    """

    url: str
    backend: str
    storage: optuna.storages.RDBStorage
    reader: optuna.storages.RDBStorage
    artifacts: ArtifactStore = field(repr=False)
    _autocommit_reads: sqlalchemy.engine.Engine | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend == "postgresql":
            # Same pool; each checkout runs without BEGIN/COMMIT (psycopg's autocommit).
            self._autocommit_reads = self.read_engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )

    @property
    def engine(self) -> sqlalchemy.engine.Engine:
        """The engine of write transactions (shared with Optuna's writes)."""
        return self.storage.engine

    @property
    def read_engine(self) -> sqlalchemy.engine.Engine:
        """The engine of read-only queries."""
        return self.reader.engine

    @contextmanager
    def write(self) -> Iterator[sqlalchemy.engine.Connection]:
        """A write transaction: committed on success, rolled back on error."""
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[sqlalchemy.engine.Connection]:
        """A connection for read-only statements.

        SQLite: a deferred transaction, one WAL snapshot. PostgreSQL: autocommit, so each
        statement sees what was committed when it started, exactly as inside a READ
        COMMITTED transaction (PostgreSQL's default), minus two round trips.
        """
        if self._autocommit_reads is not None:
            with self._autocommit_reads.connect() as connection:
                yield connection
            return
        with self.read_engine.begin() as connection:
            yield connection

    def close(self) -> None:
        """Closes every pooled connection."""
        self.engine.dispose()
        if self.reader is not self.storage:
            self.read_engine.dispose()


def normalize_url(url: str) -> str:
    """Selects the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite://`` URL names; None for other databases, an in-memory one, a
    ``file:`` URI or a malformed URL (which ``open_store`` reports)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file:") else Path(database)


def open_store(
    url: str | None = None,
    *,
    artifact_store: str = "auto",
    artifacts_dir: Path | str = Path("automl-artifacts"),
    s3_bucket: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> Store:
    """Opens (creating what is missing) the store at ``url``.

    Args:
        url: SQLAlchemy URL; defaults to ``sqlite:///automl.db``.
        artifact_store: ``auto``, ``folder``, ``sql`` or ``s3`` (see ``Settings``).
        artifacts_dir: Folder of the ``folder`` artifact store.
        s3_bucket: Bucket of the ``s3`` artifact store.
        pool_size: PostgreSQL connections the process keeps open (as many more are opened
            for bursts, and closed after use).

    Raises:
        StorageError: If the URL is malformed, the database cannot be reached, or the
            artifact store cannot be opened (``bad_config`` where the settings are at
            fault, such as an artifacts folder that cannot be created where they put it).
    """
    from automl.store.artifacts import (
        ArtifactStoreError,
        UnusableArtifactsFolderError,
        build_artifact_store,
    )

    url = normalize_url(url or DEFAULT_STORAGE)
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:  # ValueError: a port 'abc'
        raise StorageError(invalid_url(url, exc), bad_config=True) from None
    _check_sqlite_folder(url)
    engine_kwargs = _engine_kwargs(url, pool_size)
    storage = _open_with_retries(url, engine_kwargs, create_tables=True)
    reader = storage
    if backend == "sqlite":
        check = _file_kept(sqlite_file(url))
        _take_write_lock_at_begin(storage.engine, check)
        reader = _open_with_retries(url, engine_kwargs, create_tables=False)
        _defer_lock_at_begin(reader.engine, check)
        _reopen_when_read_only(storage.engine, reader.engine)
    elif backend == "postgresql":
        _ping_when_idle(storage.engine)
        _end_idle_transactions(storage.engine)
    try:
        artifacts = build_artifact_store(
            artifact_store,
            backend=backend,
            engines=(storage.engine, reader.engine),
            directory=Path(artifacts_dir),
            s3_bucket=s3_bucket,
        )
    except (ArtifactStoreError, OSError) as exc:
        storage.engine.dispose()
        reader.engine.dispose()
        if isinstance(exc, UnusableArtifactsFolderError):  # names the folder and its setting
            raise StorageError(str(exc), bad_config=True) from None
        bad_config = isinstance(exc, ArtifactStoreError)
        raise StorageError(
            f"cannot open the artifact store: {exc}", bad_config=bad_config
        ) from None
    return Store(url=url, backend=backend, storage=storage, reader=reader, artifacts=artifacts)


def open_store_from(settings: Settings) -> Store:
    """Opens the store that ``settings`` name (storage URL and artifact store)."""
    return open_store(
        settings.storage,
        artifact_store=settings.artifact_store,
        artifacts_dir=settings.artifacts_dir,
        s3_bucket=settings.s3_bucket,
        pool_size=settings.db_pool_size,
    )


def _check_sqlite_folder(url: str) -> None:
    """Raises a ``StorageError`` (bad config) if a SQLite file's folder is not there, or no
    file can be made in it where SQLite must make one (the database, or the ``-wal`` and
    ``-shm`` files of its write-ahead log, which it makes beside the database even to
    read): SQLite would answer "unable to open database file" to every try, which a worker
    or the API took for an outage and waited out for good."""
    database = sqlite_file(url)
    if database is None:
        return
    if not database.parent.is_dir():
        raise StorageError(
            f"cannot open storage {without_password(url)}: no folder {database.parent}",
            bad_config=True,
        )
    database = Path(os.path.realpath(database))  # SQLite's files go beside a link's target
    log = [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]
    if database.exists() and all(path.exists() for path in log):
        return  # in use by another process, or left by one: nothing to make
    refusal = _refused_new_file(database.parent)
    if refusal is not None:
        made = "the database" if not database.exists() else "its -wal and -shm files"
        folder = database.parent.absolute()
        raise StorageError(
            f"cannot open storage {without_password(url)}: folder {folder} refuses new files "
            f"({refusal}), and SQLite makes {made} there",
            bad_config=True,
        )


FOLDER_REFUSALS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT})
"""Why a folder refuses a new file for good (a read-only mount, permissions, /proc, which
answers ENOENT); a full disk or too many open files pass, and are waited out."""


def _refused_new_file(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (``FOLDER_REFUSALS``); None if one can, or
    if it failed for a passing reason."""
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".automl-probe-")
    except OSError as exc:
        if exc.errno not in FOLDER_REFUSALS:
            return None
        return exc.strerror or type(exc).__name__
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def has_automl_tables(url: str) -> bool:
    """Whether the database at ``url`` holds automl's tables; creates nothing.

    Args:
        url: SQLAlchemy URL of a server database (PostgreSQL): a SQLite file that is
            not there would be created by the connection.

    Raises:
        StorageError: If the URL is malformed or the database cannot be reached (or
            refuses the connection).
    """
    url = normalize_url(url)
    try:
        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url)
        )
    except sqlalchemy.exc.ArgumentError as exc:
        raise StorageError(invalid_url(url, exc), bad_config=True) from None
    except (ImportError, ValueError) as exc:
        raise StorageError(no_driver(url, exc), bad_config=True) from None
    try:
        return sqlalchemy.inspect(engine).has_table(tables.studies.name)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise _open_error(url, exc) from None
    finally:
        engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    """The engine's ``connect_args`` for ``url`` (its timeouts), alone."""
    return {key: value for key, value in _engine_kwargs(url).items() if key == "connect_args"}


def _pg_connect_args(url: str) -> dict[str, Any]:
    """libpq parameters that bound how long a PostgreSQL connection can hang: connecting,
    and waiting on a peer that went silent (a network cut, a host gone without a reset: the
    kernel stops getting acknowledgements). A parameter the URL's query string gives is
    left out: SQLAlchemy would let ``connect_args`` override it."""
    defaults = {
        "connect_timeout": PG_CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": PG_KEEPALIVES_IDLE_S,
        "keepalives_interval": PG_KEEPALIVES_INTERVAL_S,
        "keepalives_count": PG_KEEPALIVES_COUNT,
        "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
    }
    given = sqlalchemy.engine.make_url(url).query
    return {key: value for key, value in defaults.items() if key not in given}


URL_FORMS = "sqlite:///PATH (three slashes, then the file) or postgresql://USER@HOST:5432/DB"
"""The storage URLs automl runs on, for messages about one it cannot use."""


def invalid_url(url: str, exc: BaseException) -> str:
    """The message for a storage setting that is no SQLAlchemy URL (a bare file name)."""
    shown = without_password(url)
    return f"invalid storage URL {shown!r} ({first_line(exc)}); write {URL_FORMS}"


def no_driver(url: str, exc: BaseException) -> str:
    """The message for a URL whose database driver is missing or refuses an option: for
    a database automl does not run on (MySQL...), which ones it does."""
    message = f"cannot open storage {without_password(url)}: {first_line(exc)}"
    try:
        backend = sqlalchemy.engine.make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return message
    if isinstance(exc, ImportError) and backend not in ("sqlite", "postgresql"):
        message += f" (automl runs on SQLite and PostgreSQL: {URL_FORMS})"
    return message


def _open_error(url: str, exc: BaseException) -> StorageError:
    """The ``StorageError`` for a database that failed to open with ``exc``."""
    return StorageError(
        f"cannot open storage {without_password(url)}: {first_line(exc)}",
        transient=is_transient(exc),
        # No such dialect or driver option, or no such database, role or password.
        bad_config=isinstance(exc, sqlalchemy.exc.ArgumentError) or is_refused_for_good(exc),
    )


def _engine_kwargs(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> dict[str, Any]:
    """``create_engine``'s keyword arguments for the database at ``url`` (a valid URL)."""
    backend = sqlalchemy.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        # isolation_level=None stops pysqlite from managing transactions itself, so the
        # "begin" hooks below decide how each transaction starts.
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None}}
    if backend == "postgresql":
        # Liveness checks: _ping_when_idle (a busy pool's connections are not pinged).
        return {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_recycle": 1800,
            "connect_args": _pg_connect_args(url),
        }
    return {"pool_pre_ping": True, "pool_recycle": 1800}


def _end_idle_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Has the server end sessions left idle inside a transaction (see the module doc).

    Set per session, not as a startup option (which some poolers refuse), and only where
    the server's own setting is off or longer: a stricter value an administrator chose
    stays. Connections opened before this (Optuna's schema setup) are closed.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        milliseconds = int(PG_IDLE_TRANSACTION_TIMEOUT_S * 1000)
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('idle_in_transaction_session_timeout', 'lock_timeout', 'plan_cache_mode')"
                )
                settings = dict(cursor.fetchall())
                for name, limit in (
                    ("idle_in_transaction_session_timeout", milliseconds),
                    ("lock_timeout", int(PG_LOCK_TIMEOUT_S * 1000)),
                ):
                    current = int(settings.get(name) or 0)
                    if current == 0 or current > limit:
                        cursor.execute(f"SET {name} = {limit}")
                if "plan_cache_mode" in settings:  # PostgreSQL 12 and later
                    # psycopg prepares a statement after a few runs, and the server then
                    # may keep a generic plan made from the statistics of that moment:
                    # early in a study, of near-empty tables, for as long as autovacuum
                    # has not analyzed them since (or at all, where it is off). Planning
                    # each run with its parameters costs tens of microseconds instead.
                    cursor.execute("SET plan_cache_mode = force_custom_plan")
        finally:
            dbapi_connection.autocommit = autocommit

    engine.dispose()


def _ping_when_idle(engine: sqlalchemy.engine.Engine) -> None:
    """Checks a pooled connection before use if it sat unused for ``PING_WHEN_IDLE_S``.

    What ``pool_pre_ping`` does, without its round trip on every checkout: a connection
    that a server restart or a network cut closed while it sat in the pool is replaced
    (with every connection pooled before it), transparently; one in steady use is not
    pinged (a failure then surfaces as a transient error, which reads retry). On a
    connection that a network cut silenced, the ping fails after ``PG_TCP_USER_TIMEOUT_MS``
    (or the keepalives), like any statement: it cannot hang for the kernel's 15 minutes.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_: Any, record: Any) -> None:
        if record is not None:
            record.info["automl_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _: Any) -> None:
        idle_since = record.info.get("automl_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_WHEN_IDLE_S:
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if _disconnected(dialect, exc, dbapi_connection):
                # The pool discards this connection (and older ones) and connects anew.
                raise sqlalchemy.exc.DisconnectionError(str(exc)) from exc
            raise


def _disconnected(dialect: Any, exc: BaseException, dbapi_connection: Any) -> bool:
    """Whether a failed ping says the connection is gone. A ping that fails at all (an
    ``OperationalError``) does: a cut during it may even surface as another error raised
    while psycopg cleans up, over the cut's own (a tester's: "can't change 'autocommit'
    now" over "connection socket closed"), with the connection marked neither closed nor
    broken, which is all the dialect's own test looks at."""
    dbapi = dialect.loaded_dbapi
    return any(
        isinstance(error, dbapi.OperationalError)
        or (isinstance(error, dbapi.Error) and dialect.is_disconnect(error, dbapi_connection, None))
        for error in (exc, exc.__context__, exc.__cause__)
    )


def _open_with_retries(
    url: str, engine_kwargs: dict[str, Any], *, create_tables: bool
) -> optuna.storages.RDBStorage:
    # Processes started together on a fresh database race to create the schema; the
    # loser sees "already exists" errors, and a retry then finds the schema in place.
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            if create_tables:
                _prepare_schema(url, engine_kwargs)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                skip_table_creation=not create_tables,
                skip_compatibility_check=not create_tables,
            )
            if create_tables:
                tables.create_tables(storage.engine)
            return storage
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if attempt == SCHEMA_RACE_RETRIES or not _is_schema_race(exc):
                raise _open_error(url, exc) from None
            time.sleep(0.2 * (attempt + 1))
        except (ImportError, ValueError) as exc:  # no driver for the URL, a bad option
            raise StorageError(no_driver(url, exc), bad_config=True) from None
        except StorageError:
            raise
        except RuntimeError as exc:
            raise StorageError(
                f"cannot open storage {without_password(url)}: {first_line(exc)}"
            ) from None
    raise AssertionError("unreachable")


FOUNDING_TABLES = (
    "automl_tickets",
    "automl_artifacts",
    "automl_artifact_chunks",
    "studies",
    "trials",
)
"""Tables every automl store has had beside ``automl_studies`` since the first release
(Optuna's own among them): one missing is a store damaged, or restored in part, not an
older store whose newer tables are added."""


def _prepare_schema(url: str, engine_kwargs: dict[str, Any]) -> None:
    """What comes before Optuna's and automl's schema setup, with one look at the tables:
    refusing a store that lost a founding table, and on a new SQLite database creating
    Optuna's ``studies`` table without id reuse.

    Raises:
        StorageError: As ``_refuse_a_partial_schema``.
    """
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        present = set(sqlalchemy.inspect(engine).get_table_names())
        _refuse_a_partial_schema(engine, url, present)
        if url.startswith("sqlite"):
            _create_studies_table_without_id_reuse(engine, present)
    finally:
        engine.dispose()


def _refuse_a_partial_schema(engine: sqlalchemy.engine.Engine, url: str, present: set[str]) -> None:
    """Refuses a store that has automl's studies but lacks a founding table (dropped, or
    left out of a restore): creating it empty would make the studies' tickets or trials
    vanish without a word, and let workers run budgets again.

    Raises:
        StorageError: Saying ``storage schema missing`` and which tables.
    """
    missing = [name for name in FOUNDING_TABLES if name not in present]
    if tables.studies.name not in present or not missing:
        return
    # A store being created by another process (SQLite creates table by table) has no
    # study yet: only one that holds studies lost what it had.
    with engine.connect() as connection:
        holds = connection.execute(sqlalchemy.select(tables.studies.c.study_id).limit(1))
        if holds.first() is None:
            return
    raise StorageError(
        f"{SCHEMA_MISSING}: the store at {without_password(url)} has automl's studies but not "
        f"the {'tables' if len(missing) > 1 else 'table'} {', '.join(missing)} (dropped, "
        "or left out of a restore); restore the database, or point AUTOML_STORAGE at the "
        f"right one: automl does not create {'them' if len(missing) > 1 else 'it'} empty, "
        "which would lose what it held"
    )


def _create_studies_table_without_id_reuse(
    engine: sqlalchemy.engine.Engine, present: set[str]
) -> None:
    """On a new SQLite database, creates Optuna's ``studies`` table first, as Optuna would
    but with ``AUTOINCREMENT``: without it SQLite gives a deleted study's id, when it was
    the highest, to the next study, and whatever still named the old study (a script, a
    warm start, an export, a dashboard tab) would silently reach the new one. Optuna's
    schema setup then finds the table in place. Databases created before keep SQLite's
    default (PostgreSQL's sequences never reuse an id).
    """
    from optuna.storages._rdb import models

    if models.StudyModel.__tablename__ in present:
        return
    metadata = sqlalchemy.MetaData()
    studies = models.StudyModel.__table__.to_metadata(metadata)  # with its unique index
    studies.dialect_options["sqlite"]["autoincrement"] = True
    metadata.create_all(engine)


def _is_schema_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text


def _sqlite_pragmas(engine: sqlalchemy.engine.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _file_kept(path: Path | None) -> Callable[[], None]:
    """A check, run as each transaction begins, that the SQLite file is the one this
    process opened: a file deleted (or replaced) under it would take every later write
    with it, unnoticed, while new processes create a new, empty database.

    Raises (the check):
        StorageUnavailableError: If the file is gone or another file took its place.
    """
    if path is None:
        return lambda: None
    path = Path(os.path.abspath(path))  # as opened, whatever the working folder later
    opened = path.stat()

    def check() -> None:
        try:
            now = path.stat()
        except FileNotFoundError:
            raise StorageUnavailableError(
                f"the SQLite file {path} was deleted under this process (what it wrote since "
                "is lost with it): move the file back, or restart the process"
            ) from None
        except OSError as exc:  # a folder's permissions, a network mount gone stale
            raise StorageUnavailableError(
                f"cannot check the SQLite file {path}: {exc.strerror or exc}"
            ) from None
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            raise StorageUnavailableError(
                f"the SQLite file {path} was replaced under this process (a copy put back is "
                "another file): restart the process to use the new file"
            )

    return check


def _watch_the_file(engine: sqlalchemy.engine.Engine, check: Callable[[], None]) -> None:
    """Runs ``check`` before each new connection (which would create an empty file where
    the database was deleted) and as each transaction begins."""

    @event.listens_for(engine, "do_connect")
    def _before_connect(*_: Any) -> None:
        check()

    @event.listens_for(engine, "begin")
    def _on_begin(_: sqlalchemy.engine.Connection) -> None:
        check()


def _reopen_when_read_only(*engines: sqlalchemy.engine.Engine) -> None:
    """Closes every SQLite connection of the process once a write is refused as read-only.

    SQLite that finds its file read-only opens it read-only, and every connection of the
    process to that file shares the handle: once the file is writable again (a mount
    remounted, a flag cleared), writes would stay refused until the process restarted.
    The refused connection's pool starts over (as after a lost connection), and so do the
    other engines' pools, so that the next write opens the file anew.
    """

    def reopen(context: sqlalchemy.engine.ExceptionContext) -> None:
        if context.original_exception is None or not is_read_only(context.original_exception):
            return
        context.is_disconnect = True  # this engine's pool is replaced
        for engine in engines:
            if engine is not context.engine:
                engine.dispose()

    for engine in engines:
        sqlalchemy.event.listen(engine, "handle_error", reopen)


def _take_write_lock_at_begin(engine: sqlalchemy.engine.Engine, check: Callable[[], None]) -> None:
    _sqlite_pragmas(engine)
    _watch_the_file(engine, check)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.engine.Connection) -> None:
        # A deferred transaction that reads, then writes, can lose a race or fail with
        # SQLITE_BUSY_SNAPSHOT; taking the write lock up front serializes it instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened during schema setup lack the hooks


def _defer_lock_at_begin(engine: sqlalchemy.engine.Engine, check: Callable[[], None]) -> None:
    _sqlite_pragmas(engine)
    _watch_the_file(engine, check)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sqlalchemy.engine.Connection) -> None:
        # A deferred transaction reads from one WAL snapshot and never takes the write lock.
        connection.exec_driver_sql("BEGIN")

    engine.dispose()


def retrying_read(function: Callable[P, T]) -> Callable[P, T]:
    """Decorates a read-only store function to retry briefly on transient errors.

    Reads are always safe to repeat; a dropped pooled connection (a database restart,
    ``pg_terminate_backend``) then costs one retry instead of an error.
    """

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        for delay in (*READ_RETRY_DELAYS_S, None):
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                # SQLite reports a missing table as an OperationalError, which workers wait
                # out as an outage (a restored database brings it back); a request is
                # answered at once, as after a lock timeout (it waited long already).
                if (
                    delay is None
                    or not is_transient(exc)
                    or is_schema_missing(exc)
                    or is_lock_timeout(exc)
                ):
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    return wrapper


def check_schema(store: Store) -> None:
    """Checks that the database answers and holds both Optuna's tables and automl's.

    Raises:
        StorageError: If the database cannot be reached or a table is missing.
    """
    try:
        with store.read() as connection:
            connection.execute(sqlalchemy.select(sqlalchemy.literal(1)))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage unreachable: {first_line(exc)}", True) from None
    try:
        with store.read() as connection:
            for table in ("studies", "trials", tables.studies.name, tables.tickets.name):
                connection.exec_driver_sql(f"SELECT 1 FROM {table} WHERE 1 = 0")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if is_transient(exc) and not is_schema_missing(exc):  # e.g. a table locked too long
            raise StorageError(f"storage unreachable: {first_line(exc)}", True) from None
        raise StorageError(f"{SCHEMA_MISSING}: {first_line(exc)}") from None
