"""``automl report ID`` on the local store (over the API: tests/e2e/test_report.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from automl.cli import report_commands
from automl.cli.main import main
from automl.config import Limits, Settings
from automl.delivery.report import SECTIONS
from tests.conftest import store_at
from tests.delivery.trained import REPORTED_STUDY, train_study

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, int]:
    """A SQLite store with a completed digits study: (url, artifacts folder, study id)."""
    root = tmp_path_factory.mktemp("report-cli")
    url = f"sqlite:///{root / 'automl.db'}"
    store = store_at(url, root)
    try:
        study_id = train_study(store, **REPORTED_STUDY)
    finally:
        store.close()
    return url, root / "artifacts", study_id


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    """Points the CLI at the trained store; no other ``AUTOML_*`` setting leaks in."""
    for field in [*Settings.model_fields, *(f"limit_{name}" for name in Limits.model_fields)]:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    url, artifacts, _ = trained
    monkeypatch.setenv("AUTOML_STORAGE", url)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs ``main(args)``; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--log-level", "WARNING", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_report(path: Path, study_id: int) -> None:
    page = path.read_text(encoding="utf-8")
    assert f"Study {study_id}: reported" in page
    for key in SECTIONS:
        assert f'<section id="{key}">' in page
    assert page.count('src="data:image/png;base64,') == len(SECTIONS)


def test_writes_the_report_to_the_default_file(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    study_id = trained[2]
    code, out, err = cli("report", str(study_id))
    assert code == 0, err
    path = tmp_path / f"study-{study_id}-report.html"
    assert out.strip() == f"study {study_id}: wrote the report to {path.name}"
    assert_report(path, study_id)


def test_output_and_open(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(report_commands.webbrowser, "open", opened.append)
    study_id = trained[2]
    target = tmp_path / "out" / "r.html"
    target.parent.mkdir()
    code, _, err = cli("report", str(study_id), "--output", str(target), "--open", "--json")
    assert code == 0, err
    assert_report(target, study_id)
    assert opened == [target.resolve().as_uri()]


def test_refusals_name_the_problem_and_write_nothing(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("report", "999")
    assert (code, err.strip()) == (2, "error: study 999 not found")
    code, _, err = cli("report", "1", "--output", str(tmp_path))
    assert code == 2 and "is a folder" in err
    code, _, err = cli("report", "1", "--output", str(tmp_path / "missing" / "r.html"))
    assert code == 2 and err.startswith("error: cannot write") and "\n" not in err.strip()
    assert list(tmp_path.glob("*.html")) == []
