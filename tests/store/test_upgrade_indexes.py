"""A database an earlier automl created gets every index automl's tables have now; every
test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from automl.store import normalize_url, tables
from tests.conftest import recorded_statements, store_at

ADDED_LATER = (
    "ix_automl_tickets_claim",
    "ix_automl_evaluations_state",
    "ix_automl_refits_state",
    "ix_automl_api_keys_revoked",
    "ix_automl_studies_fingerprint",
)
"""Indexes of automl tables that versions before them lack."""


def _indexes(engine: sa.engine.Engine, names: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each table's indexes (not constraints) by name: their columns."""
    inspector = sa.inspect(engine)
    return {
        name: {
            index["name"]: index["column_names"]
            for index in inspector.get_indexes(name)
            if not index.get("duplicates_constraint")
        }
        for name in names
    }


def _expected() -> dict[str, dict[str, list[str]]]:
    return {
        table.name: {index.name: [c.name for c in index.columns] for index in table.indexes}
        for table in tables.metadata.sorted_tables
    }


def _optuna_tables(engine: sa.engine.Engine) -> list[str]:
    return sorted(set(sa.inspect(engine).get_table_names()) - set(tables.metadata.tables))


def _make_it_old(engine: sa.engine.Engine) -> None:
    """Puts automl's tables back as an early version left them: without the indexes added
    later, and with the tickets' study/state index before it was widened (same name)."""
    with engine.begin() as connection:
        for name in (*ADDED_LATER, "ix_automl_tickets_study_state"):
            connection.execute(sa.text(f"DROP INDEX {name}"))
        narrow = "CREATE INDEX ix_automl_tickets_study_state ON automl_tickets (study_id, state)"
        connection.execute(sa.text(narrow))


def _old_database(url: str, tmp_path: Path) -> tuple[sa.engine.Engine, dict[str, Any]]:
    """An old database at ``url``, an engine on it and Optuna's indexes as created."""
    store_at(url, tmp_path).close()
    engine = sa.create_engine(normalize_url(url))
    optuna_indexes = _indexes(engine, _optuna_tables(engine))
    _make_it_old(engine)
    current = _indexes(engine, list(tables.metadata.tables))
    assert current["automl_tickets"]["ix_automl_tickets_study_state"] == ["study_id", "state"]
    assert not set(ADDED_LATER) & {name for found in current.values() for name in found}
    return engine, optuna_indexes


def test_create_tables_adds_missing_and_widened_indexes_of_every_table(
    storage_url: str, tmp_path: Path
) -> None:
    engine, optuna_indexes = _old_database(storage_url, tmp_path)
    try:
        tables.create_tables(engine)
        tables.create_tables(engine)
        store_at(storage_url, tmp_path).close()  # as a process opening the store does

        assert _indexes(engine, list(tables.metadata.tables)) == _expected()
        assert _indexes(engine, _optuna_tables(engine)) == optuna_indexes
    finally:
        engine.dispose()


def test_create_tables_changes_nothing_on_a_current_database(
    storage_url: str, tmp_path: Path
) -> None:
    store_at(storage_url, tmp_path).close()
    engine = sa.create_engine(normalize_url(storage_url))
    try:
        with recorded_statements(engine) as run:
            tables.create_tables(engine)
    finally:
        engine.dispose()

    verbs = {statement.strip().split()[0].upper() for statement in run}
    assert verbs and not {"CREATE", "DROP", "ALTER", "BEGIN"} & verbs


def test_processes_starting_at_once_upgrade_an_old_database(
    storage_url: str, tmp_path: Path
) -> None:
    """Workers and the API start together: each opens the store and upgrades the schema;
    none fails, and the indexes end up as defined."""
    engine, _ = _old_database(storage_url, tmp_path)
    starters = 4
    barrier = threading.Barrier(starters)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            store_at(storage_url, tmp_path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert _indexes(engine, list(tables.metadata.tables)) == _expected()
    finally:
        engine.dispose()
