"""Schemathesis against the app's own OpenAPI schema: no 5xx, no answer the schema denies.

Every operation gets generated (valid and invalid) requests, and the state machine walks
the schema's links (submit a study, then read, cancel, extend... that study). The app runs
in process over SQLite; the requests carry an admin API key, so the routes behind the auth
dependency are fuzzed too, not just its 401 (without enforced keys the header is ignored).
Each operation is fuzzed on a fresh copy of a store seeded with a completed study (a
trained trial and its weights) and a queued one, and most generated ids are pointed at
them, so the requests reach the routes' work, not only their 404.
"""

from __future__ import annotations

import itertools
import shutil
from collections import defaultdict
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
from automl.api.params import MAX_ID
from automl.config import Settings
from automl.spec import validate_spec
from automl.store import submit_study
from automl.store.keys import create_key
from tests.conftest import tiny_spec_data
from tests.delivery.trained import TRAINED_SPEC, train_study

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


SPEC_EXAMPLES = 200
"""Generated specs for ``POST /studies`` (the other operations get twenty requests)."""


def open_app(root: Path, *, reap: bool = True) -> FastAPI:
    """An app over the SQLite store in ``root`` (``automl.db`` and ``art/``)."""
    settings = Settings(storage=f"sqlite:///{root / 'automl.db'}", artifacts_dir=root / "art")
    return create_app(settings, reap=reap)


def fuzz_app(root: Path, *, reap: bool = True) -> tuple[FastAPI, dict[str, str]]:
    """An app over a new SQLite store in ``root``, and headers with an admin key of it."""
    root.mkdir(parents=True, exist_ok=True)
    app = open_app(root, reap=reap)
    _, token = create_key(app.state.store, "fuzz", admin=True)
    return app, {"Authorization": f"Bearer {token}"}


COMPLETED_ID, QUEUED_ID = 1, 2
"""The seeded studies: one run to completion (trial 0 trained, its weights kept), and one
submitted that no worker took."""
SEEDED_IDS = (COMPLETED_ID, QUEUED_ID, COMPLETED_ID)


def seeded_ids(path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Points three in four generated study ids at a seeded study (and then most trial
    numbers at its trial 0), so the fuzzing reaches the routes' code past the 404.

    Deterministic in the generated values, so Hypothesis can replay and shrink a case.
    """
    study_id = (path_parameters or {}).get("study_id")
    if path_parameters is None or not _in_range(study_id) or study_id % 4 == 3:
        return path_parameters
    mapped = {**path_parameters, "study_id": SEEDED_IDS[study_id % 4]}
    number = path_parameters.get("number")
    if _in_range(number) and number % 3 != 2:
        mapped["number"] = 0
    return mapped


def _in_range(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_ID


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store (a folder to copy) holding the seeded studies and an admin key; its headers."""
    root = tmp_path_factory.mktemp("seeded")
    app, headers = fuzz_app(root, reap=False)
    store = app.state.store
    one_epoch = {**TRAINED_SPEC["fixed"], "epochs": 1}
    assert train_study(store, name="fuzz-completed", fixed=one_epoch) == COMPLETED_ID
    queued = submit_study(store, validate_spec(tiny_spec_data(name="fuzz-queued")))
    assert queued.id == QUEUED_ID
    store.close()
    return root, headers


class SeededApps:
    """A fresh copy of the seeded store for each operation: the operations fuzzed before
    (a DELETE, a cancel) do not change what the next one finds."""

    def __init__(self, template: Path, work: Path) -> None:
        self.template, self.work = template, work
        self.label: str | None = None
        self.app: FastAPI | None = None
        self.copies = itertools.count()

    def app_for(self, case: schemathesis.Case) -> FastAPI:
        """The app for ``case``'s operation (a new copy when the operation changes)."""
        if self.app is None or case.operation.label != self.label:
            self.close()
            root = self.work / f"op{next(self.copies)}"
            shutil.copytree(self.template, root)
            self.app, self.label = open_app(root), case.operation.label
        return self.app

    def close(self) -> None:
        if self.app is not None:
            self.app.state.store.close()
            self.app = None


@pytest.fixture(scope="module")
def fuzzed(
    seeded: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app's schema (loaded from its own ``/openapi.json``) and the headers to send."""
    template, headers = seeded
    root = tmp_path_factory.mktemp("schema") / "store"
    app = open_app(Path(shutil.copytree(template, root)))
    yield schemathesis.openapi.from_asgi("/openapi.json", app), headers
    app.state.store.close()


@pytest.fixture(scope="module")
def apps(
    seeded: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SeededApps]:
    """Copies of the seeded store, one per fuzzed operation."""
    copies = SeededApps(seeded[0], tmp_path_factory.mktemp("copies"))
    yield copies
    copies.close()


@pytest.fixture(scope="module")
def answered() -> Iterator[dict[str, set[int]]]:
    """Every status each fuzzed operation answered; once the module's tests are done in
    this test process, the fuzzing must have got past the 404s of every seeded route
    (``REACHED``). A fixture's teardown, not a test of its own: the suite's test processes
    take tests one by one, and another process would see nothing recorded."""
    seen: dict[str, set[int]] = defaultdict(set)
    yield seen
    missed = {label: code for label, code in REACHED.items() if code not in seen[label]}
    assert not seen or not missed, dict(seen)


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Any, dict[str, str]]) -> Any:
    """The schema that ``schema.parametrize`` below runs over, its ids sent to the seeds."""
    api = fuzzed[0]
    api.hook("map_path_parameters")(lambda context, parameters: seeded_ids(parameters))
    return api


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow  # about fifteen seconds
@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(
    case: schemathesis.Case,
    fuzzed: tuple[Any, Any],
    apps: SeededApps,
    answered: dict[str, set[int]],
) -> None:
    response = case.call_and_validate(headers=fuzzed[1], checks=CHECKS, app=apps.app_for(case))
    answered[case.operation.label].add(response.status_code)


@pytest.mark.slow
@schema.include(method="POST", path="/studies").parametrize()
@settings(FUZZ_SETTINGS, max_examples=SPEC_EXAMPLES)
def test_submitted_specs_conform(
    case: schemathesis.Case, fuzzed: tuple[Any, Any], apps: SeededApps
) -> None:
    """The spec is the API's largest input: many more specs, generated from ``StudySpec``
    (valid and not, as JSON and YAML), each on the seeded store."""
    case.call_and_validate(headers=fuzzed[1], checks=CHECKS, app=apps.app_for(case))


REACHED = {
    "GET /studies/{study_id}": 200,
    "GET /studies/{study_id}/trials": 200,
    "GET /studies/{study_id}/trials/{number}": 200,
    "GET /studies/{study_id}/trials/{number}/weights": 200,
    "GET /studies/{study_id}/best": 200,
    "GET /studies/{study_id}/best/model": 200,
    "GET /studies/{study_id}/report": 200,
    "POST /studies/{study_id}/cancel": 200,
    "DELETE /studies/{study_id}": 204,
}
"""Answers only a seeded study gives: the fuzzing got past the 404 to the routes' work."""


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
