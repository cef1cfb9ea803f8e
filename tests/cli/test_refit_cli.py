"""``automl refit ID``: queues the refit on the local store or over the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.cli import client as cli_client
from automl.cli import refit_commands
from automl.cli.main import main
from automl.config import Settings
from tests.cli.local_store import isolate_cli
from tests.conftest import tiny_spec_data


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> None:
    isolate_cli(monkeypatch, sqlite_url, tmp_path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def api_url(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    """Routes ``refit``'s HTTP client to an in-process API on the CLI's own store."""
    app = create_app(Settings(storage=sqlite_url, artifacts_dir=tmp_path / "artifacts"))

    class InProcessHttpClient(cli_client.HttpClient):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self._http.close()
            self._http = TestClient(app, base_url=self.base_url)

    monkeypatch.setattr(refit_commands, "HttpClient", InProcessHttpClient)
    yield "http://api.test"
    app.state.store.close()


def test_refit_queues_once_and_refuses_with_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, api_url: str
) -> None:
    spec = tmp_path / "spec.yaml"
    data = tiny_spec_data(
        budget={"n_trials": 1},
        dataset={"source": "digits", "options": {"test_fraction": 0.2}},  # a refit scores on it
    )
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli(capsys, "submit", str(spec))[0] == 0
    code, _, err = cli(capsys, "refit", "1")
    assert (code, err) == (
        2,
        "error: study 1 is queued; a refit retrains its best trial once "
        "it has ended (wait for it to complete, or cancel it)\n",
    )
    assert cli(capsys, "refit", "7")[1:] == ("", "error: study 7 not found\n")

    assert cli(capsys, "run", str(spec))[0] == 0  # study 2, completed
    code, out, err = cli(capsys, "refit", "2")
    assert code == 0, err
    assert out.startswith("study 2: refit queued;")
    code, out, err = cli(capsys, "refit", "2", "--url", api_url, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "queued"  # asked twice, queued once
    assert "refit on train + validation: queued" in cli(capsys, "best", "2")[1]
    code, _, err = cli(capsys, "refit", "1", "--url", api_url)
    assert code == 2 and err.startswith("error: study 1 is queued")
