"""``--url`` that names something other than automl's API: the error says so, and which
request got which answer; automl's own errors (an unknown study) stay as they are."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.cli import study_commands
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE
from automl.cli.http_client import HttpClient
from automl.cli.main import main
from automl.config import Settings
from automl.spec import validate_spec
from automl.store import submit_study
from tests.conftest import tiny_spec_data

HINT = "check --url / AUTOML_URL"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for field in Settings.model_fields:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``main(args)``: (exit code, the one line of stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    return code, line


@pytest.fixture
def automl_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FastAPI]:
    """An automl API that the CLI's client reaches in-process at ``http://api.test``."""
    app = create_app(
        Settings(storage=f"sqlite:///{tmp_path / 'api.db'}", artifacts_dir=tmp_path / "art")
    )

    class InProcessHttpClient(HttpClient):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self._http.close()
            self._http = TestClient(app, base_url=self.base_url)

    monkeypatch.setattr(study_commands, "HttpClient", InProcessHttpClient)
    yield app
    app.state.store.close()


def test_a_path_under_automls_api_is_named_as_the_wrong_url(
    automl_api: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once ``error: Not Found``: the framework's answer for a path no route has."""
    code, line = _cli(capsys, "status", "--url", "http://api.test/api")

    assert code == EXIT_BAD_INPUT
    assert line == (
        "error: http://api.test/api does not answer as an automl API "
        f"(GET /studies: HTTP 404 Not Found); {HINT}"
    )


def test_automls_own_404s_stay_as_they_are(
    automl_api: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(capsys, "status", "7", "--url", "http://api.test") == (
        EXIT_BAD_INPUT,
        "error: study 7 not found",
    )
    assert _cli(capsys, "best", "7", "--url", "http://api.test") == (
        EXIT_BAD_INPUT,
        "error: study 7 not found",
    )


class _Gateway(SimpleHTTPRequestHandler):
    """What a reverse proxy answers while the server behind it is down."""

    def do_GET(self) -> None:
        self.send_error(502)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Files(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``python -m http.server`` in a thread, serving a folder: (its URL, the folder)."""
    root = tmp_path / "site"
    root.mkdir()
    with _serving(partial(_Files, directory=str(root))) as url:
        yield url, root


@pytest.fixture
def gateway() -> Iterator[str]:
    """A server that answers every GET with 502 Bad Gateway (HTML)."""
    with _serving(_Gateway) as url:
        yield url


@contextmanager
def _serving(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free port in a thread, with ``handler``; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_server_that_is_not_automl_is_named(
    other_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Once ``error: HTTP 404``."""
    url, _ = other_server

    code, line = _cli(capsys, "status", "--url", url)

    assert code == EXIT_BAD_INPUT
    assert line == (
        f"error: {url} does not answer as an automl API (GET /studies: HTTP 404 Not Found); {HINT}"
    )


def test_a_success_that_is_not_json_is_named_not_a_traceback(
    other_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, root = other_server
    (root / "studies").write_text("<html>not an API</html>")

    code, line = _cli(capsys, "status", "--url", url)

    assert code == EXIT_BAD_INPUT
    assert line == (
        f"error: {url} does not answer as an automl API (GET /studies: HTTP 200 OK, "
        f"not JSON); {HINT}"
    )


@pytest.mark.parametrize(
    ("command", "path", "body"),
    [
        (("status",), "studies", '{"items": []}'),
        (("status", "3"), "studies/3", '{"id": "three"}'),
        (("trials", "3"), "studies/3/trials", "[1, 2, 3]"),
        (("best", "3"), "studies/3/best", "null"),
    ],
)
def test_a_json_success_of_another_shape_is_named_not_a_traceback(
    other_server: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    command: tuple[str, ...],
    path: str,
    body: str,
) -> None:
    url, root = other_server
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(body)

    code, line = _cli(capsys, *command, "--url", url)

    assert code == EXIT_BAD_INPUT
    assert line == (
        f"error: {url} does not answer as an automl API (GET /{path}: HTTP 200 OK, "
        f"an answer of another shape (another automl version?)); {HINT}"
    )


def test_a_gateway_error_in_front_of_automl_is_a_failure_not_bad_input(
    gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, line = _cli(capsys, "status", "--url", gateway)

    assert code == EXIT_FAILURE
    assert "(GET /studies: HTTP 502 Bad Gateway)" in line


def test_a_listing_against_an_older_api_leaves_out_the_parameter_it_refuses(
    automl_api: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    """An API of the release before ``intermediate_values`` refuses unknown query
    parameters (422); the table asks again without it."""
    asked: list[str] = []

    @automl_api.middleware("http")
    async def older_api(request: Request, call_next: Any) -> Any:
        asked.append(str(request.url.query))
        if "intermediate_values" in request.query_params:
            detail = [
                {
                    "loc": ["query", "intermediate_values"],
                    "msg": "unknown query parameter 'intermediate_values'",
                    "type": "value_error",
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        return await call_next(request)

    study_id = submit_study(automl_api.state.store, validate_spec(tiny_spec_data())).id
    capsys.readouterr()

    code = main(["trials", str(study_id), "--url", "http://api.test"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines()[-1] == "(0 of 0 trials)"
    assert [query for query in asked if "intermediate_values" in query]  # asked lean first
