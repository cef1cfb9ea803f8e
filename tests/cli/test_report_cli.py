"""``automl report ID`` on the local store (over the API: tests/e2e/test_report.py)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from automl import file_clock
from automl.cli import report_commands
from automl.delivery.report import SECTIONS
from tests.cli.local_store import Run, cli_runner, point_cli_at, trained_store
from tests.delivery.trained import REPORTED_STUDY


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, int]:
    """A SQLite store with a completed digits study: (url, artifacts folder, study id)."""
    return trained_store(tmp_path_factory.mktemp("report-cli"), **REPORTED_STUDY)


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, trained, tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    return cli_runner(capsys)


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


def test_output_dash_writes_the_page_to_standard_output(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    """Found by a scripting tester: ``--output -`` wrote a file named ``-``."""
    study_id = trained[2]
    code, out, err = cli("report", str(study_id), "--output", "-")
    assert code == 0, err
    (tmp_path / "piped.html").write_text(out, encoding="utf-8")
    assert_report(tmp_path / "piped.html", study_id)
    assert not (tmp_path / "-").exists()
    code, out, err = cli("report", str(study_id), "--output", "-", "--open", "--json")
    assert (code, out) == (2, "")
    assert (
        err.strip() == "error: --output - writes the page itself; --open and --json go with a file"
    )


def test_refusals_name_the_problem_and_write_nothing(cli: Run, tmp_path: Path) -> None:
    code, _, err = cli("report", "999")
    assert (code, err.strip()) == (2, "error: study 999 not found")
    code, _, err = cli("report", "1", "--output", str(tmp_path))
    assert code == 2 and "is a folder" in err
    code, _, err = cli("report", "1", "--output", str(tmp_path / "missing" / "r.html"))
    assert code == 2 and err.startswith("error: cannot write") and "\n" not in err.strip()
    assert list(tmp_path.glob("*.html")) == []


def test_a_file_that_is_no_report_is_replaced_only_with_overwrite(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    study_id = trained[2]
    spec = tmp_path / "tiny.yaml"
    spec.write_text("name: tiny\n")

    code, _, err = cli("report", str(study_id), "-o", str(spec))

    assert code == 2 and "exists and is not an automl report" in err
    assert spec.read_text() == "name: tiny\n"
    code, _, err = cli("report", str(study_id), "-o", str(spec), "--overwrite")
    assert code == 0, err
    assert_report(spec, study_id)
    code, _, err = cli("report", str(study_id), "-o", str(spec))  # an earlier report: replaced
    assert code == 0, err
    assert report_commands.REPORT_MARK in spec.read_bytes()[:512]


def test_a_full_disk_leaves_no_cut_off_report_and_the_retry_writes_it(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a full disk left a 0-byte r.html, which the retry then refused
    ("exists and is not an automl report")."""
    study_id, target = trained[2], tmp_path / "r.html"
    real_write = Path.write_text

    def half_then_full(path: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real_write(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", half_then_full)
    code, _, err = cli("report", str(study_id), "-o", str(target))
    assert (code, err.strip()) == (1, f"error: cannot write {target}: No space left on device")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(Path, "write_text", real_write)
    code, _, err = cli("report", str(study_id), "-o", str(target))
    assert code == 0, err
    assert_report(target, study_id)


def test_a_killed_reports_leftover_is_removed_once_stale(
    cli: Run, trained: tuple[str, Path, int], tmp_path: Path
) -> None:
    """A report killed mid-write left its hidden ``.NAME.partial-PID`` for good; the next
    report of that name removes one an hour old (a younger one may be another report's
    write in progress)."""
    study_id, target = trained[2], tmp_path / "r.html"
    stale, fresh = (tmp_path / f".r.html.partial-{pid}" for pid in (12345, 12346))
    other = tmp_path / ".other.html.partial-12345"
    for leftover in (stale, fresh, other):
        leftover.write_text("<html>cut off")
    hour_ago = time.time() - file_clock.STALE_SIBLING_S - 1
    for old in (stale, other):
        os.utime(old, (hour_ago, hour_ago))

    code, _, err = cli("report", str(study_id), "-o", str(target))

    assert code == 0, err
    assert_report(target, study_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name, "r.html"])
