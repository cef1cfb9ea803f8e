"""A database that is down, restarting or dropping connections is a 503, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from optuna.exceptions import StorageInternalError

import automl.api.routes.studies
from tests.api.conftest import close_client, make_client
from tests.conftest import tiny_spec_data
from tests.netproxy import TcpProxy


def _wrapped() -> StorageInternalError:
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("terminated"))
    return error


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed")),
        sqlalchemy.exc.InterfaceError("SELECT", {}, Exception("connection closed")),
        _wrapped(),
    ],
    ids=["operational", "interface", "optuna-wrapped"],
)
def test_transient_database_errors_are_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(automl.api.routes.studies, "list_studies", down)
    monkeypatch.setattr(automl.api.routes.studies, "submit_or_replay", down)

    listed = client.get("/studies")
    submitted = client.post("/studies", json=tiny_spec_data())

    for response in (listed, submitted):
        assert response.status_code == 503
        assert response.json() == {"detail": "storage unavailable, try again later"}
        assert response.headers["Retry-After"] == "5"


def test_a_database_that_refuses_writes_as_read_only_is_a_503_that_says_so(
    client: TestClient,
) -> None:
    """Found by a tester: a SQLite file the API may not write answered every write with
    "storage unavailable, try again later", and nothing said why."""
    store = client.app.state.store  # type: ignore[attr-defined]
    for engine in {store.engine, store.read_engine}:
        engine.dispose()
        sqlalchemy.event.listen(
            engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA query_only = ON")
        )

    response = client.post("/studies", json=tiny_spec_data())

    assert response.status_code == 503
    assert response.json()["detail"].startswith(
        "storage unavailable: the database refuses writes as read-only"
    )
    assert client.get("/studies").status_code == 200  # reads go on


def test_other_database_errors_stay_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(automl.api.routes.studies, "list_studies", bug)
    response = TestClient(client.app, raise_server_exceptions=False).get("/studies")
    assert response.status_code == 500


def test_health_checks_the_schema(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    with client.app.state.store.write() as connection:  # type: ignore[attr-defined]
        connection.execute(sqlalchemy.text("DROP TABLE automl_studies"))
    response = client.get("/health")
    assert response.status_code == 503
    # Not the driver's text, which names hosts and ports: the server log keeps that.
    assert response.json()["detail"] == "storage schema missing"
    assert response.headers["Retry-After"] == "5"


def test_a_missing_schema_is_503_on_every_route(storage_url: str, tmp_path: Path) -> None:
    """Once ``GET /studies`` answered 500 on PostgreSQL (an undefined table is not an
    outage) and "storage unavailable, try again later" on SQLite (after retries), while
    ``GET /health`` said what it was."""
    client = TestClient(
        make_client(storage_url, tmp_path / "artifacts").app, raise_server_exceptions=False
    )
    try:
        study_id = client.post("/studies", json=tiny_spec_data()).json()["id"]
        with client.app.state.store.write() as connection:  # type: ignore[attr-defined]
            connection.execute(sqlalchemy.text("ALTER TABLE automl_studies RENAME TO renamed"))

        answers = {
            "health": client.get("/health"),
            "list": client.get("/studies"),
            "one": client.get(f"/studies/{study_id}"),
            "trials": client.get(f"/studies/{study_id}/trials"),
            "submit": client.post("/studies", json=tiny_spec_data()),
            "cancel": client.post(f"/studies/{study_id}/cancel"),
        }

        for route, response in answers.items():
            assert response.status_code == 503, (route, response.text)
            assert response.json() == {"detail": "storage schema missing"}, route
    finally:
        close_client(client)


@pytest.fixture
def proxied_client(postgres_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, TcpProxy]]:
    """An API whose PostgreSQL connections go through a proxy the test can cut."""
    url = sqlalchemy.engine.make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    test_client = make_client(proxy.url_for(postgres_url), tmp_path / "artifacts")
    try:
        yield test_client, proxy
    finally:
        proxy.restore()
        close_client(test_client)
        proxy.close()


def test_api_answers_503_while_postgres_is_unreachable_then_recovers(
    proxied_client: tuple[TestClient, TcpProxy],
) -> None:
    client, proxy = proxied_client
    study_id = client.post("/studies", json=tiny_spec_data()).json()["id"]

    proxy.cut()
    responses = [
        client.get("/studies"),
        client.get(f"/studies/{study_id}"),
        client.get(f"/studies/{study_id}/trials"),
        client.post(f"/studies/{study_id}/cancel"),
        client.post("/studies", json=tiny_spec_data()),
        client.get("/health"),
    ]
    assert [r.status_code for r in responses] == [503] * len(responses)

    proxy.restore()
    assert client.get(f"/studies/{study_id}").json()["status"] == "queued"
    assert client.get("/health").status_code == 200
    assert client.get("/studies").json()["count"] == 1  # the failed submit left nothing


def test_an_outage_is_one_warning_not_an_error_per_request(
    proxied_client: tuple[TestClient, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    # Found by exploratory testing: one or two ERROR lines per request while the database
    # was down, and /health's body carried the driver's message with host and port.
    client, proxy = proxied_client
    proxy.cut()
    with caplog.at_level(logging.INFO, logger="automl.api"):
        responses = [client.get("/studies") for _ in range(5)] + [client.get("/health")]
    assert [r.status_code for r in responses] == [503] * 6
    assert {r.json()["detail"] for r in responses} == {"storage unavailable, try again later"}
    records = [r for r in caplog.records if r.name == "automl.api"]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in records] == [
        ("WARNING", "storage unavailable")
    ]
    assert "1 request(s) answered 503" in records[0].getMessage()
