"""Out-of-range ids and a busy port: one ``error:`` line and a documented exit code."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from automl.cli.arguments import MAX_ID
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE
from automl.cli.main import main

HUGE = "99999999999999999999999"


@pytest.mark.parametrize(
    "args",
    [
        ["status", HUGE],
        ["status", str(MAX_ID + 1)],
        ["status", "-1"],
        ["best", HUGE],
        ["cancel", HUGE],
        ["extend", HUGE, "--add-trials", "1"],
        ["extend", "1", "--add-trials", HUGE],
        ["resume", HUGE],
        ["rerun-failed", HUGE],
        ["delete", HUGE],
        ["predict", HUGE, "x.png"],
        ["annotate", HUGE, "inbox"],
        ["worker", "--study", HUGE],
    ],
    ids=lambda args: "-".join(args)[:40],
)
def test_out_of_range_numbers_are_usage_errors(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)

    assert exc.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    [error] = [line for line in err.splitlines() if "error:" in line]
    assert "is out of range" in error
    assert "Traceback" not in err


def test_a_huge_limit_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "--limit", HUGE, "--storage", f"sqlite:///{tmp_path}/a.db"])

    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [f"error: --limit must be <= {MAX_ID}"]


def test_status_of_a_huge_id_prints_no_traceback(tmp_path: Path) -> None:
    """The reported defect, as a user runs it: once a 62-line traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "automl", "status", HUGE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )

    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(
        f"argument study: {HUGE} is out of range: study ids are 0 to {MAX_ID}"
    )
    assert not (tmp_path / "automl.db").exists(), "refused before opening the store"


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_busy_port_is_one_error_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        code = main([command, "--port", str(port), "--storage", f"sqlite:///{tmp_path}/a.db"])

    assert code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use (choose another with --port)"
    ]
    assert not (tmp_path / "a.db").exists(), "refused before opening the store"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["dashboard", "--port"], "--port"),
        (["up", "--dashboard", "--dashboard-port"], "--dashboard-port"),
    ],
    ids=["dashboard", "up-dashboard"],
)
def test_a_busy_dashboard_port_is_one_error_line_naming_its_flag(
    args: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy, socket.socket() as api:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        api.bind(("127.0.0.1", 0))  # a free port for ``up``'s API: bound, never listening
        port, api_port = busy.getsockname()[1], api.getsockname()[1]
        api.close()

        code = main(
            [*args, str(port), "--storage", f"sqlite:///{tmp_path}/a.db"]
            + (["--port", str(api_port)] if args[0] == "up" else [])
        )

    assert code == EXIT_FAILURE
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use (choose another with {flag})"
    ]
    assert not (tmp_path / "a.db").exists(), "refused before opening the store"
