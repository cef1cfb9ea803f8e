"""Schemathesis against the app's own OpenAPI schema: no 5xx, no answer the schema denies.

Every operation gets generated (valid and invalid) requests, and the state machine walks
the schema's links (submit a study, then read, cancel, extend... that study). The app runs
in process over a fresh SQLite store; the requests carry an admin API key, so the routes
behind the auth dependency are fuzzed too, not just its 401 (without enforced keys the
header is ignored).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from automl.api import create_app
from automl.config import Settings
from automl.store.keys import create_key

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Bounded and repeatable: twenty requests per operation, the same ones every run.
FUZZ_SETTINGS = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz_app(root: Path, *, reap: bool = True) -> tuple[FastAPI, dict[str, str]]:
    """An app over a new SQLite store in ``root``, and headers with an admin key of it."""
    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(storage=f"sqlite:///{root / 'automl.db'}", artifacts_dir=root / "art")
    app = create_app(settings, reap=reap)
    _, token = create_key(app.state.store, "fuzz", admin=True)
    return app, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app's schema (loaded from its own ``/openapi.json``) and the headers to send."""
    app, headers = fuzz_app(tmp_path_factory.mktemp("fuzz"))
    yield schemathesis.openapi.from_asgi("/openapi.json", app), headers
    app.state.store.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Any, dict[str, str]]) -> Any:
    """The schema that ``schema.parametrize`` below runs over."""
    return fuzzed[0]


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(case: schemathesis.Case, fuzzed: tuple[Any, Any]) -> None:
    case.call_and_validate(headers=fuzzed[1], checks=CHECKS)


def test_linked_calls_conform(fuzzed: tuple[Any, dict[str, str]], tmp_path: Path) -> None:
    api, _ = fuzzed
    links = [
        name
        for path in api.raw_schema["paths"].values()
        for operation in path.values()
        for response in operation.get("responses", {}).values()
        for name in response.get("links", {})
    ]
    assert links, "the schema declares no links: the state machine would test nothing"

    # Valid requests only in the scenarios: an invalid spec creates nothing to follow.
    api.config.phases.stateful.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
    answered: list[tuple[str, int]] = []
    scenarios = itertools.count()

    class Scenario(api.as_state_machine()):  # type: ignore[misc]
        # Each scenario on its own app and empty store: the same requests must get the same
        # answers (Hypothesis replays scenarios, and refuses ones that behave differently).
        def setup(self) -> None:
            self.app, self.headers = fuzz_app(tmp_path / f"s{next(scenarios)}", reap=False)

        def teardown(self) -> None:
            self.app.state.store.close()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": self.headers, "app": self.app}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            answered.append((case.operation.label, response.status_code))

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers=self.headers)

    Scenario.run(settings=settings(FUZZ_SETTINGS, max_examples=15, stateful_step_count=6))
    # The links were followed: some call on a created study (not the submission) succeeded.
    followed = {label for label, code in answered if code < 300 and label != "POST /studies"}
    assert any("{study_id}" in label for label in followed), answered


def test_every_error_response_declares_its_body(fuzzed: tuple[Any, dict[str, str]]) -> None:
    """4xx and 5xx answers are declared with their shape: ``ErrorDetail``, or FastAPI's
    validation error for 422s; and every operation may answer 503 (storage down)."""
    api, _ = fuzzed
    for path, operations in api.raw_schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "503" in responses, f"{method.upper()} {path}"
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    schema = response.get("content", {}).get("application/json", {}).get("schema")
                    expected = "HTTPValidationError" if code == "422" else "ErrorDetail"
                    assert schema == {"$ref": f"#/components/schemas/{expected}"}, (
                        f"{method.upper()} {path} {code}"
                    )


def test_requests_get_past_auth(fuzzed: tuple[Any, dict[str, str]]) -> None:
    api, headers = fuzzed
    with TestClient(api.app) as client:
        assert client.get("/studies").status_code == 401  # keys exist: the API wants one
        assert client.get("/studies", headers=headers).status_code == 200


def test_undecodable_json_body_is_a_422_naming_the_body(
    fuzzed: tuple[Any, dict[str, str]],
) -> None:
    api, headers = fuzzed
    with TestClient(api.app) as client:
        response = client.post(
            "/studies/1/extend",
            content=b"\xff\xfe{",
            headers={**headers, "Content-Type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]
