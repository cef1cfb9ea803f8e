"""Tables created by an earlier version are brought up to date when a store opens them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from automl.spec import StudySpec
from automl.store import normalize_url, submit_study, tables
from tests.conftest import store_at


def _make_it_old(url: str, tmp_path: Path) -> None:
    """Puts ``automl_studies`` back as the version before projects scoped keys left it:
    no project indexes, and (PostgreSQL) one idempotency key across all projects."""
    store_at(url, tmp_path).close()
    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as connection:
        for index in tables.studies.indexes:
            connection.execute(sa.text(f"DROP INDEX {index.name}"))
        if engine.dialect.name == "postgresql":
            connection.execute(
                sa.text(
                    "ALTER TABLE automl_studies DROP CONSTRAINT uq_automl_studies_idempotency;"
                    "ALTER TABLE automl_studies ADD CONSTRAINT "
                    "automl_studies_idempotency_key_key UNIQUE (idempotency_key)"
                )
            )
    engine.dispose()


def test_an_old_studies_table_is_upgraded_on_open(
    storage_url: str, tmp_path: Path, tiny_spec: Callable[..., StudySpec]
) -> None:
    _make_it_old(storage_url, tmp_path)

    store = store_at(storage_url, tmp_path)
    try:
        inspector = sa.inspect(store.engine)
        indexes = {index["name"] for index in inspector.get_indexes("automl_studies")}
        assert {index.name for index in tables.studies.indexes} <= indexes
        if store.backend == "postgresql":
            uniques = {u["name"] for u in inspector.get_unique_constraints("automl_studies")}
            assert "uq_automl_studies_idempotency" in uniques
            assert "automl_studies_idempotency_key_key" not in uniques
            # The same key in two projects: two studies.
            a = submit_study(store, tiny_spec(), idempotency_key="k", project="a")
            b = submit_study(store, tiny_spec(), idempotency_key="k", project="b")
            assert a.id != b.id
    finally:
        store.close()
