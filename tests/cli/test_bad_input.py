"""Out-of-range ids and a busy port: one ``error:`` line and a documented exit code."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from automl.cli.arguments import MAX_ID
from automl.cli.commands import errors_as_cli_errors
from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CliError
from automl.cli.http_client import HttpClient
from automl.cli.main import main
from automl.worker import DeviceFaultError
from tests.conftest import free_port

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


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["proxy", "--concurrency", "0"], "--concurrency: 0 is out of range"),
        (["proxy", "--cached-studies", "0"], "--cached-studies: 0 is out of range"),
        (["proxy", "--port", "65535"], "coordination takes port + 1) are 1 to 65534"),
        (["serve", "--port", "70000"], "--port: 70000 is out of range: ports are 1 to 65535"),
        (["up", "--port", "0"], "--port: 0 is out of range"),
        # The API's limit, so a command answers alike with --url and without (once: none).
        (["predict", "1", "a.png", "--top", "1000"], "classes per image are 1 to 100"),
        (["annotate", "1", "inbox", "--top", "0"], "classes per image are 1 to 100"),
    ],
)
def test_ports_and_concurrency_out_of_range_are_usage_errors(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a ValueError (a pool of 0 threads) or an OverflowError (binding port 65536)."""
    with pytest.raises(SystemExit) as exc:
        main(args)

    assert exc.value.code == EXIT_BAD_INPUT
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inbox", "--csv", ""], "error: --csv: String should have at least 1 character"),
        ([""], "error: folder: String should have at least 1 character"),
    ],
)
def test_annotate_with_an_empty_path_is_one_error_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a pydantic traceback and exit 1."""
    code = main(["annotate", "1", *args, "--storage", f"sqlite:///{tmp_path}/a.db"])

    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [message]


LONG_LABEL = "a" * 70


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://host:abc", "Invalid port"),
        ("http://[::1", "Invalid port"),
        (f"http://{LONG_LABEL}.com", "idna"),
        ("localhost:8000", "give http://HOST:PORT"),
    ],
)
def test_a_malformed_api_url_is_one_error_line(
    url: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--url", url])

    assert code == EXIT_BAD_INPUT
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: invalid API URL {url!r}") and fragment in line


@pytest.mark.parametrize("key", ["ключ", "ab\ncd", "with space"])
def test_an_api_key_no_key_could_be_is_one_error_line(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a UnicodeEncodeError, or "cannot reach the API" blaming the network."""
    monkeypatch.setenv("AUTOML_API_KEY", key)

    code = main(["status", "--url", "http://127.0.0.1:1"])

    assert code == EXIT_BAD_INPUT
    [line] = capsys.readouterr().err.splitlines()
    assert "the API key (AUTOML_API_KEY) holds characters no key has" in line


def test_an_api_key_read_from_a_file_with_its_newline_is_used_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a tester: a key with a trailing newline (a secret file) was refused."""
    monkeypatch.setenv("AUTOML_API_KEY", "  automl_abc123\n")

    client = HttpClient("http://127.0.0.1:1")

    assert client.api_key == "automl_abc123"  # what every request sends as its bearer


def test_a_spec_that_is_not_utf8_is_one_error_line_against_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bin.yaml"
    spec.write_bytes(bytes(range(128, 256)))

    code = main(["submit", str(spec), "--url", "http://127.0.0.1:1"])

    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot read spec file {spec}: not UTF-8 text"
    ]


def test_a_worker_for_an_unknown_study_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once "stopped after 0 trials" and exit 0."""
    storage = f"sqlite:///{tmp_path}/a.db"

    code = main(["worker", "--study", "999", "--exit-when-idle", "--storage", storage])

    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines()[-1] == "error: study 999 not found"


@pytest.mark.parametrize("value", ["inf", "1e10", "0", "nan", "soon"])
def test_a_poll_interval_out_of_range_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``inf`` once crashed an idle worker with a traceback."""
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--poll-interval", value])

    assert exc.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--poll-interval" in err
    if value == "0":  # a tester: "0 to 3600 s" said 0 was in range
        assert "poll intervals are more than 0, at most 3600 s" in err


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `automl trials 1 --json | head` printed a BrokenPipeError traceback.
    storage = f"sqlite:///{tmp_path / 'pipe.db'}"
    assert main(["keys", "create", "--project", "p", "--storage", storage]) == 0
    command = [sys.executable, "-m", "automl", "keys", "list", "--json", "--storage", storage]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # gone before the first line is written

    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == EXIT_FAILURE
    assert err == ""


# --- bad configuration: exit 2, one line ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["status", "--storage", "foo"], {}, "error: invalid storage URL 'foo' ("),
        (["worker", "--storage", "foo"], {}, "error: invalid storage URL 'foo' ("),
        # Found by a security review: the URL was echoed whole, password and all, and a
        # port that is no number (or a bracket left open) ended in a traceback.
        (
            ["status", "--storage", "postgresql+bogus://u:S3cret@h/x"],
            {},
            "error: invalid storage URL 'postgresql+bogus://u:***@h/x' (",
        ),
        (
            ["status", "--storage", "postgresql://u:S3cret@127.0.0.1:abc/x"],
            {},
            "error: invalid storage URL 'postgresql+psycopg://u:***@127.0.0.1:abc/x' (",
        ),
        (
            ["worker", "--storage", "postgresql://u@[::1/x?password=S3cret"],
            {},
            "error: invalid storage URL 'postgresql+psycopg://u@[::1/x?password=***' (",
        ),
        (
            ["status", "--storage", "mysql://user@localhost/automl"],
            {},
            "error: cannot open storage mysql://user@localhost/automl: ",
        ),
        (
            ["keys", "create", "--project", "p"],
            {"AUTOML_ARTIFACT_STORE": "s3"},
            "error: cannot open the artifact store: AUTOML_S3_BUCKET must name a bucket",
        ),
        (
            ["worker", "--exit-when-idle"],
            {"AUTOML_ARTIFACT_STORE": "s3"},
            "error: cannot open the artifact store: AUTOML_S3_BUCKET must name a bucket",
        ),
    ],
    ids=[
        "storage-url-status",
        "storage-url-worker",
        "unknown-driver",
        "port-not-a-number",
        "open-bracket",
        "mysql",
        "s3-keys",
        "s3-worker",
    ],
)
def test_a_bad_storage_setting_is_exit_2(
    args: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad configuration is bad input (2), not a runtime failure (1)."""
    monkeypatch.delenv("AUTOML_S3_BUCKET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    storage = [] if "--storage" in args else ["--storage", f"sqlite:///{tmp_path}/a.db"]

    code = main([*args, *storage])

    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert line.startswith(message), line
    assert "S3cret" not in err
    if "storage" in message:  # found by a tester: no word on what a storage URL looks like
        assert "sqlite:///PATH (three slashes, then the file) or postgresql://" in line


def test_a_worker_on_a_sqlite_file_in_a_missing_folder_stops_at_once(tmp_path: Path) -> None:
    """Once retried forever ("unable to open database file", taken for an outage)."""
    storage = f"sqlite:///{tmp_path / 'missing' / 'w.db'}"
    command = [sys.executable, "-m", "automl", "worker", "--storage", storage]

    done = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot open storage {storage}: no folder {tmp_path / 'missing'}"
    )


# --- hints that name the option to change --------------------------------------------------

NOT_THIS_MACHINE = "192.0.2.1"
"""An address of TEST-NET-1 (RFC 5737): no machine has it."""


@pytest.mark.parametrize("command", ["serve", "dashboard"])
def test_a_host_that_is_not_this_machines_names_host_not_port(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once "Cannot assign requested address (choose another with --port)"."""
    port, storage = free_port(), f"sqlite:///{tmp_path}/a.db"

    code = main([command, "--host", NOT_THIS_MACHINE, "--port", str(port), "--storage", storage])

    assert code == EXIT_FAILURE
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: cannot listen on {NOT_THIS_MACHINE}:{port}: ")
    assert line.endswith("no interface of this machine has it (choose another with --host)")


def test_a_busy_coordination_port_says_it_is_port_plus_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once "cannot listen on 127.0.0.1:P+1: Address already in use", naming no option."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1] - 1

        code = main(["proxy", "--port", str(port), "--storage", f"sqlite:///{tmp_path}/a.db"])

    assert code == EXIT_FAILURE
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port + 1} (the coordination port: --port + 1): "
        "Address already in use (choose another --port; the proxy listens on it and on the "
        "next)"
    )


# --- suggestions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["sumbit", "spec.yaml"], "invalid choice: 'sumbit' (did you mean 'submit'?); valid "),
        (["keys", "lsit"], "invalid choice: 'lsit' (did you mean 'list'?); valid choices: "),
        (["--log-level", "WARN", "status"], "'WARN' (did you mean 'WARNING'?)"),
        (["frobnicate"], "invalid choice: 'frobnicate'; valid choices: serve, worker, "),
    ],
)
def test_a_misspelled_choice_gets_a_suggestion(
    args: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)

    assert exc.value.code == EXIT_BAD_INPUT
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert suggestion in error


def test_tables_gone_under_a_command_are_one_line_not_an_outage() -> None:
    """A command whose tables were dropped under it said "storage unavailable" (SQLite's
    missing table is an OperationalError, like an outage)."""
    gone = sqlite3.OperationalError("no such table: automl_tickets")

    with pytest.raises(CliError) as info, errors_as_cli_errors(None):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, gone)

    assert info.value.code == EXIT_FAILURE
    assert str(info.value).startswith("storage schema missing: ")


def test_a_worker_stopped_by_a_cuda_error_exits_with_one_line() -> None:
    """``automl worker`` and ``automl run`` end with the reason and exit 1, so that a
    supervisor or a container's restart policy starts a clean process."""
    fault = DeviceFaultError("worker w stops: trial 3 of study 1 left its device unusable (x)")

    with pytest.raises(CliError) as info, errors_as_cli_errors(None):
        raise fault

    assert info.value.code == EXIT_FAILURE
    assert str(info.value) == str(fault)
