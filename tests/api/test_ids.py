"""Ids and trial numbers in paths: out of a 32-bit column's range is a 422, on every route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from automl.api.params import MAX_ID
from tests.api.conftest import close_client, make_client

OUT_OF_RANGE = [str(MAX_ID + 1), "99999999999999999999999", "-1"]

PATH_PARAM = re.compile(r"\{(\w+)\}")


def id_routes(client: TestClient) -> list[tuple[str, str]]:
    """``(method, path)`` of every operation under a study, as the app's OpenAPI schema
    declares them (routes added later are covered without editing this test)."""
    schema = client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if "{study_id}" in path
        for method in operations
    ]


def fill(path: str, **values: str) -> str:
    return PATH_PARAM.sub(lambda match: values.get(match.group(1), "0"), path)


@pytest.fixture
def pg_client(postgres_url: str, tmp_path: Path) -> Iterator[TestClient]:
    client = make_client(postgres_url, tmp_path / "artifacts")
    yield client
    close_client(client)


def test_every_path_parameter_is_a_bounded_id(client: TestClient) -> None:
    """Every whole-number path parameter is bounded to 0..2**31 - 1 in the schema."""
    schema = client.get("/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":
                    continue
                where = f"{method.upper()} {path} {parameter['name']}"
                if parameter["schema"].get("type") != "integer":  # a name, as /registries/{kind}
                    assert not parameter["name"].endswith(("id", "number")), where
                    continue
                assert parameter["schema"]["minimum"] == 0, where
                assert parameter["schema"]["maximum"] == MAX_ID, where
                checked += 1
    assert checked >= 15


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_out_of_range_study_id_is_422_on_every_route(client: TestClient, value: str) -> None:
    routes = id_routes(client)
    assert len(routes) >= 14
    for method, path in routes:
        response = client.request(method, fill(path, study_id=value))

        assert response.status_code == 422, (method, path, response.text)
        locs = [error["loc"] for error in response.json()["detail"]]
        assert ["path", "study_id"] in locs, (method, path, locs)
    assert client.get("/studies").json()["count"] == 0


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_out_of_range_trial_number_is_422(client: TestClient, value: str) -> None:
    trial_routes = [(m, p) for m, p in id_routes(client) if "{number}" in p]
    assert len(trial_routes) >= 2
    for method, path in trial_routes:
        response = client.request(method, fill(path, number=value))

        assert response.status_code == 422, (method, path, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["path", "number"]
        if value.isdigit():  # a tester: its words changed with the number of digits
            assert error["msg"].endswith(f"is not an id: a whole number from 0 to {MAX_ID}")


@pytest.mark.postgres
def test_ids_at_the_edge_of_the_range_on_postgres(pg_client: TestClient) -> None:
    """2**31 - 1 is a plain 404 (PostgreSQL's integer column holds it); 2**31 a 422."""
    for path in ("/studies/{id}", "/studies/{id}/best", "/studies/{id}/trials/0"):
        response = pg_client.get(path.format(id=MAX_ID))
        assert response.status_code == 404, (path, response.text)
        assert pg_client.get(path.format(id=MAX_ID + 1)).status_code == 422, path
    assert pg_client.post(f"/studies/{MAX_ID}/cancel").status_code == 404
    assert pg_client.post(f"/studies/{MAX_ID + 1}/cancel").status_code == 422
    assert pg_client.get(f"/studies/0/trials/{MAX_ID + 1}/weights").status_code == 422


def test_ids_at_the_edge_of_the_range_on_sqlite(client: TestClient) -> None:
    assert client.get(f"/studies/{MAX_ID}").status_code == 404
    assert client.get(f"/studies/{MAX_ID}/trials/{MAX_ID}/weights").status_code == 404


@pytest.mark.parametrize("path", ["/studies", "/studies/0/trials"])
def test_out_of_range_offset_is_422(client: TestClient, path: str) -> None:
    for value in OUT_OF_RANGE:
        response = client.get(path, params={"offset": value})

        assert response.status_code == 422, (value, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "offset"]
    assert client.get("/studies", params={"offset": MAX_ID}).json()["data"] == []


@pytest.mark.parametrize("value", ["7_0", "+7", "1%20", "%207", "0x10", "1e3"])
def test_ids_that_only_int_would_read_are_422(client: TestClient, value: str) -> None:
    """``int()`` reads ``7_0`` as 70 and `` 7`` as 7; no id is written that way."""
    for method, path in id_routes(client):
        response = client.request(method, fill(path, study_id=value))

        assert response.status_code == 422, (method, path, response.text)
        errors = response.json()["detail"]
        assert ["path", "study_id"] in [error["loc"] for error in errors], (method, path)
        assert any("is not an id" in error["msg"] for error in errors), errors


def test_a_wrong_method_names_every_method_of_the_path(client: TestClient) -> None:
    """Starlette's 405 names only the first route with the path (GET for /studies/7)."""
    cases = {
        ("PUT", "/studies/7"): "DELETE, GET, HEAD",
        ("PATCH", "/studies"): "GET, HEAD, POST",
        ("DELETE", "/studies/7/extend"): "POST",
        ("POST", "/docs"): "GET, HEAD",  # outside the OpenAPI document: Starlette's own
    }
    for (method, path), allowed in cases.items():
        response = client.request(method, path)

        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == allowed, (method, path)


def test_head_answers_as_get_without_a_body(client: TestClient) -> None:
    """Once every route answered HEAD with a 405 whose Allow header listed HEAD."""
    for path in ("/health", "/studies", "/studies/7", "/docs"):
        got, head = client.get(path), client.head(path)

        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert client.head("/studies/7/extend").status_code == 405  # a POST route


def test_every_422_names_its_field_path(client: TestClient) -> None:
    """Spec errors carried ``path``; query, path and other body errors did not."""
    cases = {
        ("GET", "/studies?limit=0"): "limit",
        ("GET", "/studies/x"): "study_id",
        ("POST", "/studies/7/extend"): "body",  # no body at all
    }
    for (method, url), path in cases.items():
        response = client.request(method, url)

        assert response.status_code == 422, (method, url, response.text)
        assert path in [error["path"] for error in response.json()["detail"]], response.text
