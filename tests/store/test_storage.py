"""The storage factory and ``QueuedTrialStorage``, the override that keeps budgets exact."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from automl.store import (
    NoQueuedTrialError,
    QueuedTrialStorage,
    StorageError,
    check_connection,
    create_storage,
    normalize_url,
)
from automl.store.storage import SQLITE_BUSY_TIMEOUT_S

UNREACHABLE_POSTGRES = "postgresql://automl:s3cret-pw@127.0.0.1:1/automl"


def _sqlite_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


# --- create_storage ------------------------------------------------------------------------


def test_sqlite_storage_uses_wal_journal(sqlite_url: str) -> None:
    storage = create_storage(sqlite_url)
    try:
        with storage.engine.connect() as connection:  # the hook runs on connect
            connection.exec_driver_sql("SELECT 1")
        with sqlite3.connect(_sqlite_file(sqlite_url)) as raw:
            (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    finally:
        storage.engine.dispose()


def test_sqlite_storage_sets_busy_timeout_on_every_connection(sqlite_url: str) -> None:
    storage = create_storage(sqlite_url)
    # Raw DBAPI connections: two pooled Connections would each BEGIN IMMEDIATE and wait
    # for one another (by design every transaction takes the write lock up front).
    first, second = storage.engine.raw_connection(), storage.engine.raw_connection()
    try:
        assert first.dbapi_connection is not second.dbapi_connection
        for connection in (first, second):
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout")
            (timeout,) = cursor.fetchone()
            cursor.close()
            assert timeout == SQLITE_BUSY_TIMEOUT_S * 1000
        assert SQLITE_BUSY_TIMEOUT_S >= 10
    finally:
        first.close()
        second.close()
        storage.engine.dispose()


def test_create_storage_returns_a_queued_trial_storage_with_the_schema(storage_url: str) -> None:
    storage = create_storage(storage_url)
    try:
        assert isinstance(storage, QueuedTrialStorage)
        assert storage.get_all_studies() == []
        # Opening the same database again (schema present) works too.
        again = create_storage(storage_url)
        again.engine.dispose()
    finally:
        storage.engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@host:5432/db", "postgresql+psycopg://u:p@host:5432/db"),
        ("postgres://u@host/db", "postgresql+psycopg://u@host/db"),
        ("postgresql+psycopg://u@host/db", "postgresql+psycopg://u@host/db"),
        ("postgresql+psycopg2://u@host/db", "postgresql+psycopg2://u@host/db"),
        ("sqlite:///automl.db", "sqlite:///automl.db"),
        ("mysql+pymysql://u@host/db", "mysql+pymysql://u@host/db"),
    ],
)
def test_normalize_url_selects_psycopg3_for_plain_postgres(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", ["not a url", "://nothing", "sqlite//missing-colon.db"])
def test_invalid_url_raises_one_line_storage_error(url: str) -> None:
    with pytest.raises(StorageError) as info:
        create_storage(url)
    message = str(info.value)
    assert "\n" not in message
    assert "invalid storage URL" in message or "cannot open storage" in message


def test_unknown_dialect_raises_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot open storage") as info:
        create_storage("nosuchdialect://host/db")
    assert "\n" not in str(info.value)


def test_unreachable_postgres_raises_one_line_storage_error_without_password() -> None:
    with pytest.raises(StorageError) as info:
        create_storage(UNREACHABLE_POSTGRES)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot open storage postgresql+psycopg://automl:***@127.0.0.1:1/")
    assert "s3cret-pw" not in message


def test_sqlite_in_missing_folder_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open storage") as info:
        create_storage(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    assert "\n" not in str(info.value)


# --- check_connection ----------------------------------------------------------------------


def test_check_connection_passes_on_open_storage(storage: QueuedTrialStorage) -> None:
    check_connection(storage)


def test_check_connection_raises_storage_error_when_unreachable() -> None:
    engine = sqlalchemy.create_engine(normalize_url(UNREACHABLE_POSTGRES))
    unreachable = cast(optuna.storages.RDBStorage, SimpleNamespace(engine=engine))
    try:
        with pytest.raises(StorageError, match=r"^storage unreachable: ") as info:
            check_connection(unreachable)
        assert "\n" not in str(info.value)
    finally:
        engine.dispose()


# --- QueuedTrialStorage: ask only claims -----------------------------------------------------


def test_ask_pops_enqueued_trials_in_order_then_raises(storage: QueuedTrialStorage) -> None:
    study = optuna.create_study(storage=storage, study_name="queue")
    for x in (1, 2, 3):
        study.enqueue_trial({"x": x})
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * 3

    claimed = []
    for _ in range(3):
        trial = study.ask()
        claimed.append((trial.number, trial.suggest_int("x", 0, 10)))
    assert claimed == [(0, 1), (1, 2), (2, 3)]
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 3

    with pytest.raises(NoQueuedTrialError):
        study.ask()
    assert len(study.get_trials()) == 3  # the refused ask created nothing


def test_ask_on_study_without_queue_raises(storage: QueuedTrialStorage) -> None:
    study = optuna.create_study(storage=storage, study_name="empty")
    with pytest.raises(NoQueuedTrialError):
        study.ask()
    assert study.get_trials() == []


def test_ask_skips_finished_and_running_trials(storage: QueuedTrialStorage) -> None:
    study = optuna.create_study(storage=storage, study_name="mixed")
    for _ in range(3):
        study.enqueue_trial({})
    first = study.ask()
    study.tell(first, 1.0)
    second = study.ask()
    third = study.ask()
    assert (first.number, second.number, third.number) == (0, 1, 2)
    with pytest.raises(NoQueuedTrialError):
        study.ask()


def test_loaded_study_refuses_fresh_trials_too(storage: QueuedTrialStorage) -> None:
    """``load_study`` wraps the storage in Optuna's cache; the refusal must survive that."""
    optuna.create_study(storage=storage, study_name="loaded").enqueue_trial({})
    loaded = optuna.load_study(study_name="loaded", storage=storage)
    assert loaded.ask().number == 0
    with pytest.raises(NoQueuedTrialError):
        loaded.ask()


def test_create_new_trial_requires_a_template(storage: QueuedTrialStorage) -> None:
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "direct")
    with pytest.raises(NoQueuedTrialError, match=f"study {study_id}"):
        storage.create_new_trial(study_id)
    template = optuna.trial.create_trial(state=TrialState.WAITING)
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    assert storage.get_trial(trial_id).state == TrialState.WAITING
    assert len(storage.get_all_trials(study_id)) == 1


def test_concurrent_asks_claim_each_queued_trial_exactly_once(
    storage: QueuedTrialStorage,
) -> None:
    n_trials, n_threads = 12, 4
    study = optuna.create_study(storage=storage, study_name="race")
    for _ in range(n_trials):
        study.enqueue_trial({})
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def claim_all() -> None:
        mine = optuna.load_study(study_name="race", storage=storage)
        start.wait()
        try:
            for _ in range(n_trials + 1):  # bounded: a regression must fail, not spin
                number = mine.ask().number
                with lock:
                    claimed.append(number)
        except NoQueuedTrialError:
            return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, daemon=True) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(claimed) == list(range(n_trials))
    trials = storage.get_all_trials(study._study_id)
    assert len(trials) == n_trials
    assert {t.state for t in trials} == {TrialState.RUNNING}
