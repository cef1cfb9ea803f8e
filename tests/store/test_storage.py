"""Opening the store: engines, SQLite locking, schema checks, artifact store choice."""

from __future__ import annotations

import errno
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

import automl.store.storage
from automl.config import Settings
from automl.spec import StudySpec
from automl.store import (
    FolderArtifactStore,
    SqlArtifactStore,
    StorageError,
    Store,
    check_schema,
    list_studies,
    normalize_url,
    open_store,
    open_store_from,
    submit_study,
    tables,
)
from automl.store.faults import StorageUnavailableError, is_schema_missing, is_transient
from automl.store.storage import (
    PG_CONNECT_TIMEOUT_S,
    PG_KEEPALIVES_COUNT,
    PG_KEEPALIVES_IDLE_S,
    PG_KEEPALIVES_INTERVAL_S,
    PG_TCP_USER_TIMEOUT_MS,
    SQLITE_BUSY_TIMEOUT_S,
    has_automl_tables,
    retrying_read,
)
from tests.store.conftest import sqlite_write_lock_held

UNREACHABLE_POSTGRES = "postgresql://automl:s3cret-pw@127.0.0.1:1/automl"


def _sqlite_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def test_sqlite_store_uses_wal_and_busy_timeout(sqlite_store: Store, sqlite_url: str) -> None:
    for engine in (sqlite_store.engine, sqlite_store.read_engine):
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == SQLITE_BUSY_TIMEOUT_S * 1000
            cursor.close()
        finally:
            raw.close()
    with sqlite3.connect(_sqlite_file(sqlite_url)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_reads_do_not_wait_for_the_write_lock(sqlite_store: Store) -> None:
    """A read runs while another transaction holds the write lock (WAL + deferred BEGIN)."""
    with sqlite_write_lock_held(sqlite_store):
        started = time.monotonic()
        with sqlite_store.read() as connection:
            assert connection.execute(sqlalchemy.text("SELECT count(*) FROM studies")).scalar() == 0
        waited = time.monotonic() - started
    assert waited < SQLITE_BUSY_TIMEOUT_S / 2  # it did not wait for the busy timeout


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_sqlite_file_deleted_or_replaced_under_the_store_is_an_outage(
    sqlite_url: str, tmp_path: Path, how: str
) -> None:
    """Found by an outage tester: every process went on writing into the deleted file
    (lost at exit) and reported nothing, while new processes made a new, empty one."""
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    path = _sqlite_file(sqlite_url)
    try:
        with store.write() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        for file in path.parent.glob(path.name + "*"):
            file.unlink()
        if how == "replaced":
            open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts").close()
        for transaction in (store.read, store.write):
            with (
                pytest.raises(StorageUnavailableError, match=f"SQLite file .* was {how}") as gone,
                transaction(),
            ):
                pass
            assert is_transient(gone.value)  # workers wait and say so; the API answers 503
    finally:
        store.close()


def test_a_sqlite_file_that_cannot_be_checked_is_an_outage(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:

        def stale(path: Path, **_: object) -> os.stat_result:
            raise OSError(errno.ESTALE, "Stale file handle")

        monkeypatch.setattr(Path, "stat", stale)
        with (
            pytest.raises(StorageUnavailableError, match=r"cannot check the SQLite file .*Stale"),
            store.read(),
        ):
            pass
    finally:
        monkeypatch.undo()
        store.close()


def test_postgres_reads_run_outside_transactions(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts")
    try:
        with store.read() as connection:
            in_transaction = sqlalchemy.text("SELECT now() = statement_timestamp()")
            first = connection.execute(in_transaction).scalar()
            time.sleep(0.01)
            second = connection.execute(in_transaction).scalar()
            with store.write() as writer:
                writer.execute(sqlalchemy.text("CREATE TABLE seen_by_reads (x int)"))
            # Each statement sees what was committed before it, as in READ COMMITTED.
            count = connection.execute(sqlalchemy.text("SELECT count(*) FROM seen_by_reads"))
            assert count.scalar() == 0
        assert first and second  # each statement is its own transaction
        with store.write() as connection:  # writes are still transactions
            connection.execute(sqlalchemy.text("INSERT INTO seen_by_reads VALUES (1)"))
            time.sleep(0.01)
            assert not connection.execute(in_transaction).scalar()
    finally:
        store.close()


def test_postgres_pool_replaces_connections_that_died_while_idle(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(automl.store.storage, "PING_WHEN_IDLE_S", 0.05)
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts", pool_size=2)
    admin = sqlalchemy.create_engine(normalize_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        pids = set()
        with store.read() as first, store.read() as second:
            for connection in (first, second):
                pids.add(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        with admin.connect() as connection:
            for pid in pids:
                connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        time.sleep(0.2)  # idle for longer than PING_WHEN_IDLE_S: checked before use
        for _ in range(3):  # no error: the dead connections are replaced on checkout
            with store.read() as connection:
                pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                assert pid not in pids
            with store.write() as connection:
                connection.exec_driver_sql("SELECT 1")
    finally:
        store.close()
        admin.dispose()


def test_pool_size_is_the_settings(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(storage=postgres_url, artifacts_dir=tmp_path / "artifacts", db_pool_size=3)
    store = open_store_from(settings)
    try:
        assert store.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        store.close()


def _connection_of(store: Store) -> tuple[dict[str, str], dict[str, int] | None]:
    """The libpq parameters a pooled connection of ``store`` opened with, and the TCP
    options its socket carries (None over a Unix socket, where TCP has none)."""
    raw = store.engine.raw_connection()
    try:
        pgconn = raw.driver_connection.pgconn  # type: ignore[union-attr]
        parameters = {o.keyword.decode(): (o.val or b"").decode() for o in pgconn.info}
        with socket.socket(fileno=os.dup(pgconn.socket)) as sock:
            if sock.family == socket.AF_UNIX:
                return parameters, None
            options = {
                "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }
        return parameters, options
    finally:
        raw.close()


def test_postgres_connections_give_up_on_a_silent_peer_within_half_a_minute(
    postgres_url: str, tmp_path: Path
) -> None:
    """Found by exploratory testing: with the kernel's defaults, a network cut that sent no
    reset held API requests and heartbeats for the whole outage (15 minutes at most),
    silently. A test's proxy acknowledges bytes itself, so only the settings are checked."""
    expected = {
        "keepalives": 1,
        "keepalives_idle": PG_KEEPALIVES_IDLE_S,
        "keepalives_interval": PG_KEEPALIVES_INTERVAL_S,
        "keepalives_count": PG_KEEPALIVES_COUNT,
        "tcp_user_timeout": PG_TCP_USER_TIMEOUT_MS,
    }
    assert PG_KEEPALIVES_IDLE_S + PG_KEEPALIVES_INTERVAL_S * PG_KEEPALIVES_COUNT <= 30
    assert PG_TCP_USER_TIMEOUT_MS <= 30_000
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts")
    try:
        parameters, options = _connection_of(store)
    finally:
        store.close()
    wanted = {**expected, "connect_timeout": PG_CONNECT_TIMEOUT_S}
    assert {key: parameters[key] for key in wanted} == {k: str(v) for k, v in wanted.items()}
    if options is not None:  # the kernel's own view of the socket
        assert options == expected


def test_libpq_parameters_in_the_url_win_over_automls_defaults(
    postgres_url: str, tmp_path: Path
) -> None:
    given = {"keepalives_idle": "42", "tcp_user_timeout": "60000", "connect_timeout": "7"}
    url = sqlalchemy.engine.make_url(postgres_url).update_query_dict(given)
    store = open_store(url.render_as_string(False), artifacts_dir=tmp_path / "artifacts")
    try:
        parameters, options = _connection_of(store)
    finally:
        store.close()
    assert {key: parameters[key] for key in given} == given
    assert parameters["keepalives_interval"] == str(PG_KEEPALIVES_INTERVAL_S)  # the rest stay
    if options is not None:
        assert (options["keepalives_idle"], options["tcp_user_timeout"]) == (42, 60000)


def test_store_opens_twice_on_the_same_database(storage_url: str, tmp_path: Path) -> None:
    first = open_store(storage_url, artifacts_dir=tmp_path)
    second = open_store(storage_url, artifacts_dir=tmp_path)
    try:
        check_schema(first)
        check_schema(second)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("dropped", ["automl_tickets", "trials"])
def test_a_store_missing_a_founding_table_is_refused_not_filled_with_an_empty_one(
    storage_url: str, tmp_path: Path, dropped: str, tiny_spec: Callable[..., StudySpec]
) -> None:
    """Found by a tester: ``automl status`` after ``DROP TABLE automl_tickets`` created it
    again, empty, and showed "0/8 finished" beside the best value; a worker started then
    ran the budget again. (A store with no study yet may be one another process is
    creating, table by table on SQLite: it is completed.)"""
    store = open_store(storage_url, artifacts_dir=tmp_path)
    submit_study(store, tiny_spec())
    store.close()
    engine = sqlalchemy.create_engine(normalize_url(storage_url))
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"DROP TABLE {dropped} CASCADE"
            if "postgres" in storage_url
            else f"DROP TABLE {dropped}"
        )

    with pytest.raises(StorageError) as refused:
        open_store(storage_url, artifacts_dir=tmp_path)

    assert str(refused.value).startswith("storage schema missing: the store at ")
    assert f"has automl's studies but not the table {dropped} (dropped," in str(refused.value)
    assert dropped not in sqlalchemy.inspect(engine).get_table_names()  # nothing created
    with engine.begin() as connection:
        connection.execute(tables.studies.delete())
    open_store(storage_url, artifacts_dir=tmp_path).close()  # no study: it is completed
    assert dropped in sqlalchemy.inspect(engine).get_table_names()
    engine.dispose()


def test_default_artifact_store_follows_the_backend(store: Store) -> None:
    expected = FolderArtifactStore if store.backend == "sqlite" else SqlArtifactStore
    assert isinstance(store.artifacts, expected)


@pytest.mark.parametrize(
    ("kind", "expected"), [("folder", FolderArtifactStore), ("sql", SqlArtifactStore)]
)
def test_artifact_store_can_be_chosen(
    sqlite_url: str, tmp_path: Path, kind: str, expected: type
) -> None:
    opened = open_store(sqlite_url, artifact_store=kind, artifacts_dir=tmp_path / "a")
    try:
        assert isinstance(opened.artifacts, expected)
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("kind", "bucket", "message"),
    [("s3", None, "AUTOML_S3_BUCKET"), ("ftp", None, "unknown artifact store 'ftp'")],
)
def test_unusable_artifact_store_is_a_storage_error(
    sqlite_url: str, tmp_path: Path, kind: str, bucket: str | None, message: str
) -> None:
    with pytest.raises(StorageError, match=message) as info:
        open_store(sqlite_url, artifact_store=kind, artifacts_dir=tmp_path, s3_bucket=bucket)
    assert info.value.bad_config  # the CLI's exit 2, not 1


def _in_the_way(tmp_path: Path, name: str) -> Path:
    """A folder path that cannot be created: a file named ``f.txt`` is in its way."""
    (tmp_path / "f.txt").write_text("not a folder")
    return tmp_path / name


@pytest.mark.parametrize(
    ("name", "reason"),
    [("f.txt", "File exists"), ("f.txt/sub", "Not a directory")],
    ids=["a-file", "under-a-file"],
)
def test_an_artifacts_folder_that_cannot_be_created_is_bad_config(
    sqlite_url: str, tmp_path: Path, name: str, reason: str
) -> None:
    """Once "cannot open the artifact store: [Errno 20] ..." and not bad config: exit 1."""
    folder = _in_the_way(tmp_path, name)
    with pytest.raises(StorageError) as info:
        open_store(sqlite_url, artifacts_dir=folder)
    assert str(info.value) == (
        f"cannot use the artifacts folder '{folder}' (AUTOML_ARTIFACTS_DIR): {reason}; set "
        "AUTOML_ARTIFACTS_DIR to a folder automl can create and write in"
    )
    assert info.value.bad_config and not info.value.transient


@pytest.mark.parametrize(
    ("code", "bad_config"),
    [(errno.EACCES, True), (errno.EROFS, True), (errno.ENOSPC, False), (errno.EIO, False)],
    ids=["permission", "read-only", "disk-full", "io-error"],
)
def test_only_a_folder_the_settings_put_in_the_wrong_place_is_bad_config(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    bad_config: bool,
) -> None:
    """A full disk or an I/O error is the machine's fault, not the setting's: as before."""

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StorageError) as info:
        open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    assert info.value.bad_config is bad_config
    assert ("(AUTOML_ARTIFACTS_DIR)" in str(info.value)) is bad_config


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@host:5432/db", "postgresql+psycopg://u:p@host:5432/db"),
        ("postgres://u@host/db", "postgresql+psycopg://u@host/db"),
        ("postgresql+psycopg://u@host/db", "postgresql+psycopg://u@host/db"),
        ("postgresql+psycopg2://u@host/db", "postgresql+psycopg2://u@host/db"),
        ("sqlite:///automl.db", "sqlite:///automl.db"),
    ],
)
def test_normalize_url_selects_psycopg3_for_plain_postgres(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["not a url", "://nothing", "sqlite//missing-colon.db"])
def test_invalid_url_raises_one_line_storage_error(url: str) -> None:
    with pytest.raises(StorageError) as info:
        open_store(url)
    message = str(info.value)
    assert "\n" not in message
    assert "invalid storage URL" in message or "cannot open storage" in message
    assert not info.value.transient
    assert info.value.bad_config


def test_unknown_dialect_is_bad_config() -> None:
    with pytest.raises(StorageError) as info:
        open_store("nosuchdialect://host/db")
    assert info.value.bad_config and not info.value.transient


def test_unknown_dialect_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot open storage") as info:
        open_store("nosuchdialect://host/db")
    assert "\n" not in str(info.value)


def test_unreachable_postgres_is_transient_one_line_and_hides_the_password() -> None:
    with pytest.raises(StorageError) as info:
        open_store(UNREACHABLE_POSTGRES)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot open storage postgresql+psycopg://automl:***@127.0.0.1:1/")
    assert "s3cret-pw" not in message
    assert info.value.transient
    assert not info.value.bad_config


def test_sqlite_in_missing_folder_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open storage") as info:
        open_store(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    assert "\n" not in str(info.value)
    assert str(info.value).endswith(f"no folder {tmp_path / 'missing'}")
    # Once "unable to open database file", transient: a worker waited for it forever.
    assert info.value.bad_config and not info.value.transient


def test_sqlite_in_a_folder_that_refuses_new_files_raises_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: in /proc (or on a read-only mount) a worker and the API retried
    "unable to open database file" for good, and read commands exited 1 without a hint."""
    real_mkstemp = automl.store.storage.tempfile.mkstemp
    refusing = {tmp_path / "ro"}
    error = [errno.EROFS, "Read-only file system"]

    def mkstemp(*args: object, dir: Path, **kwargs: object) -> tuple[int, str]:
        if Path(dir) in refusing:
            raise OSError(*error)
        return real_mkstemp(*args, dir=dir, **kwargs)  # type: ignore[call-overload]

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(automl.store.storage.tempfile, "mkstemp", mkstemp)
    with pytest.raises(StorageError) as info:
        open_store(f"sqlite:///{tmp_path / 'ro' / 'x.db'}")
    assert str(info.value) == (
        f"cannot open storage sqlite:///{tmp_path / 'ro' / 'x.db'}: folder {tmp_path / 'ro'} "
        "refuses new files (Read-only file system), and SQLite makes the database there"
    )
    assert info.value.bad_config and not info.value.transient
    assert list((tmp_path / "ro").iterdir()) == []

    refusing.clear()  # a store made while the folder took files, then made read-only
    open_store(f"sqlite:///{tmp_path / 'ro' / 'x.db'}").close()
    refusing.add(tmp_path / "ro")
    with pytest.raises(StorageError, match=r"and SQLite makes its -wal and -shm files there$"):
        open_store(f"sqlite:///{tmp_path / 'ro' / 'x.db'}")

    error[:] = [errno.ENOSPC, "No space left on device"]  # passing: waited out, not refused
    open_store(f"sqlite:///{tmp_path / 'ro' / 'x.db'}").close()


def _other_database(postgres_url: str, **parts: str) -> str:
    """``postgres_url`` with some of its parts (``database``, ``username``) replaced."""
    url = sqlalchemy.engine.make_url(postgres_url).set(**parts)
    return url.render_as_string(hide_password=False)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("parts", "says"),
    [
        ({"database": "automl_no_such_database"}, 'database "automl_no_such_database"'),
        ({"username": "automl_no_such_role"}, 'role "automl_no_such_role"'),
    ],
)
def test_a_database_or_role_that_is_not_there_is_bad_config_not_an_outage(
    postgres_url: str, parts: dict[str, str], says: str
) -> None:
    """Once transient: ``automl worker`` retried ``database "x" does not exist`` forever."""
    url = _other_database(postgres_url, **parts)
    for call in (lambda: open_store(url), lambda: has_automl_tables(url)):
        with pytest.raises(StorageError, match=f"{says} does not exist") as info:
            call()
        assert info.value.bad_config and not info.value.transient
        assert "\n" not in str(info.value)


@pytest.mark.postgres
def test_has_automl_tables_creates_nothing(postgres_url: str, tmp_path: Path) -> None:
    def table_count() -> int:
        engine = sqlalchemy.create_engine(normalize_url(postgres_url))
        try:
            return len(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()

    assert has_automl_tables(postgres_url) is False
    assert table_count() == 0
    open_store(postgres_url, artifacts_dir=tmp_path).close()
    assert has_automl_tables(postgres_url) is True


def test_has_automl_tables_of_an_unreachable_database_is_a_transient_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot open storage") as info:
        has_automl_tables(UNREACHABLE_POSTGRES)
    assert info.value.transient and not info.value.bad_config
    assert "s3cret-pw" not in str(info.value)


def test_check_schema_reports_a_missing_table(store: Store) -> None:
    check_schema(store)
    with store.write() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE automl_tickets"))
    with pytest.raises(StorageError, match=r"^storage schema missing: ") as info:
        check_schema(store)
    assert "\n" not in str(info.value)


def test_a_missing_table_is_told_apart_and_not_retried(store: Store) -> None:
    """SQLite's "no such table" is an OperationalError, which reads retry (an outage)."""
    calls = []

    @retrying_read
    def read() -> None:
        calls.append(1)
        with store.read() as connection:
            connection.exec_driver_sql("SELECT 1 FROM automl_studies")

    read()
    with store.write() as connection:
        connection.exec_driver_sql("ALTER TABLE automl_studies RENAME TO renamed")
    with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
        read()
    assert is_schema_missing(info.value)
    assert len(calls) == 2
    assert not is_schema_missing(sqlalchemy.exc.OperationalError("SELECT", {}, Exception("down")))


def test_postgres_sessions_end_idle_transactions_unless_the_server_is_stricter(
    postgres_url: str, tmp_path: Path
) -> None:
    def timeout_of_a_new_session() -> str:
        store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts")
        try:
            with store.write() as connection:
                return str(
                    connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar()
                )
        finally:
            store.close()

    assert timeout_of_a_new_session() == "1min"
    admin = sqlalchemy.create_engine(normalize_url(postgres_url), isolation_level="AUTOCOMMIT")
    try:
        database = sqlalchemy.engine.make_url(normalize_url(postgres_url)).database
        with admin.connect() as connection:
            connection.exec_driver_sql(
                f"ALTER DATABASE \"{database}\" SET idle_in_transaction_session_timeout = '10s'"
            )
    finally:
        admin.dispose()
    assert timeout_of_a_new_session() == "10s"  # an administrator's stricter value stays


def test_a_postgres_statement_waits_for_a_lock_as_long_as_sqlite_does_then_is_an_outage(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An administrator's LOCK TABLE (a migration, a manual fix) held every API request
    and worker with no limit, where SQLite's busy timeout ends the wait."""
    monkeypatch.setattr(automl.store.storage, "PG_LOCK_TIMEOUT_S", 1.0)
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts")
    admin = sqlalchemy.create_engine(normalize_url(postgres_url))
    try:
        with admin.connect() as holder, holder.begin():
            holder.exec_driver_sql("LOCK TABLE automl_studies IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
                list_studies(store)  # a read that retries outages: not a lock timeout
            waited = time.monotonic() - started
            with pytest.raises(StorageError, match="storage unreachable") as health:
                check_schema(store)  # what /health runs: not "schema missing"
        assert is_transient(info.value) and health.value.transient
        assert "lock timeout" in str(info.value)
        assert 0.9 < waited < 1.9
        with store.read() as connection:  # the lock is gone: it answers again
            assert connection.exec_driver_sql("SELECT count(*) FROM automl_studies").scalar() == 0
    finally:
        admin.dispose()
        store.close()


def test_postgres_sessions_plan_each_query_with_its_parameters(
    postgres_url: str, tmp_path: Path
) -> None:
    """Prepared statements would keep a plan made when the study's tables were nearly
    empty (17 ms instead of 1 ms for the retention query at 150 trials)."""
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts")
    try:
        for session in (store.read, store.write):
            with session() as connection:
                mode = connection.exec_driver_sql("SHOW plan_cache_mode").scalar()
                assert mode == "force_custom_plan"
    finally:
        store.close()


def test_a_sqlite_write_refused_as_read_only_reopens_the_file_for_the_next(
    sqlite_store: Store,
) -> None:
    """Found by a tester: an API that first wrote while its SQLite file was read-only kept
    answering "read-only" after the file was writable again (SQLite had opened the file
    read-only, for every connection of the process), until restarted."""
    read_only_left = [1]  # the next new connection opens "read-only"

    def maybe_read_only(dbapi_connection: sqlite3.Connection, _: object) -> None:
        if read_only_left and read_only_left.pop():
            dbapi_connection.execute("PRAGMA query_only = ON")

    sqlalchemy.event.listen(sqlite_store.engine, "connect", maybe_read_only)
    sqlite_store.close()  # the pools start empty: the next write connects

    with (
        pytest.raises(sqlalchemy.exc.OperationalError) as refused,
        sqlite_store.write() as connection,
    ):
        connection.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
    assert is_transient(refused.value)

    with sqlite_store.write() as connection:  # a new connection: the file opened anew
        connection.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
    with sqlite_store.read() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 0


def test_a_new_sqlite_store_never_gives_a_deleted_studys_id_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    open_store(sqlite_url, artifacts_dir=tmp_path).close()
    database = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        [sql] = database.execute("SELECT sql FROM sqlite_master WHERE name = 'studies'").fetchone()
    finally:
        database.close()
    assert "AUTOINCREMENT" in sql.upper()


def test_postgres_pool_replaces_a_connection_cut_during_its_ping_whatever_the_error(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a cut during the ping surfaced as psycopg's ProgrammingError
    ("can't change 'autocommit' now"), which is no disconnect: the heartbeat failed."""
    import psycopg

    monkeypatch.setattr(automl.store.storage, "PING_WHEN_IDLE_S", 0.05)
    store = open_store(postgres_url, artifacts_dir=tmp_path / "artifacts", pool_size=1)
    try:
        with store.read() as connection:
            first = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def cut_during_ping(dbapi_connection: Any) -> None:
            try:  # the connection is marked neither closed nor broken
                raise psycopg.OperationalError("connection socket closed")
            finally:
                raise psycopg.ProgrammingError(  # as psycopg raises in its own cleanup
                    "can't change 'autocommit' now: connection in transaction status ACTIVE"
                )

        monkeypatch.setattr(store.engine.dialect, "do_ping", cut_during_ping)
        time.sleep(0.2)  # idle for longer than PING_WHEN_IDLE_S: checked before use
        with store.read() as connection:
            monkeypatch.undo()
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != first
    finally:
        store.close()
