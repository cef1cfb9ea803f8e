"""API fixtures: a TestClient over a fresh SQLite store, and an in-process worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.config import Settings
from automl.worker import Worker, WorkerOptions
from tests.conftest import tiny_spec_data

RunStudy = Callable[[int], None]


def make_client(storage_url: str, artifacts_dir: Path, **settings: Any) -> TestClient:
    """A TestClient over a new app on ``storage_url`` (extra ``Settings`` fields allowed)."""
    app = create_app(Settings(storage=storage_url, artifacts_dir=artifacts_dir, **settings))
    return TestClient(app)


def close_client(client: TestClient) -> None:
    """Closes the client and the app's store."""
    client.close()
    client.app.state.store.close()  # type: ignore[attr-defined]


def run_to_completion(app: FastAPI, study_id: int) -> None:
    """Works ``study_id`` to its end in this process, on the app's own store."""
    options = WorkerOptions(
        device="cpu", study_id=study_id, exit_when_idle=True, reap_interval=None
    )
    Worker(app.state.store, options).run()


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """A TestClient over the API on a fresh SQLite file."""
    test_client = make_client(sqlite_url, tmp_path / "artifacts")
    yield test_client
    close_client(test_client)


@pytest.fixture
def run_study(client: TestClient) -> RunStudy:
    """Runs a submitted study of ``client``'s app to completion in-process."""
    app: FastAPI = client.app  # type: ignore[assignment]

    def run(study_id: int) -> None:
        run_to_completion(app, study_id)

    return run


@pytest.fixture
def submit(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Submits a tiny spec (keyword arguments replace top-level fields); returns the study."""

    def post(**overrides: Any) -> dict[str, Any]:
        response = client.post("/studies", json=tiny_spec_data(**overrides))
        assert response.status_code == 201, response.text
        return response.json()

    return post


COMPLETED_SPEC = tiny_spec_data(
    name="completed",
    budget={"n_trials": 2, "max_failed": 0},
    fixed={"epochs": 2, "width": 8, "depth": 1, "batch_size": 128},
)


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, int]]:
    """A client whose store holds one study, already run to completion (shared per module)."""
    root = tmp_path_factory.mktemp("completed")
    test_client = make_client(f"sqlite:///{root / 'automl.db'}", root / "artifacts")
    response = test_client.post("/studies", json=COMPLETED_SPEC)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    run_to_completion(test_client.app, study_id)  # type: ignore[arg-type]
    yield test_client, study_id
    close_client(test_client)


@contextmanager
def served_in_thread(app: FastAPI, port: int) -> Iterator[None]:
    """``app`` served by uvicorn on ``port`` in a thread of this process, for the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)
