"""Settings refused at start name the variable (or flag), the value and what is valid; a
worker refuses to start when it could not write its cache or artifacts; the help tells
the real thread defaults."""

from __future__ import annotations

import errno
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from automl.cli.main import main
from automl.config import Settings, settings_error
from tests.cli.local_store import isolate_cli
from tests.conftest import free_port, tiny_spec_data

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> None:
    """A fresh SQLite store, folders in the test's own folder, no other ``AUTOML_*``."""
    isolate_cli(monkeypatch, sqlite_url, tmp_path)
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOML_DEVICE", "cpu")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs ``main(args)``; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def error_line(err: str) -> str:
    """The last line of stderr, which must be the command's one ``error: ...`` line."""
    line = err.splitlines()[-1]
    assert line.startswith("error: "), err
    assert sum(text.startswith("error: ") for text in err.splitlines()) == 1, err
    return line


@pytest.mark.parametrize(
    ("variable", "value", "command", "valid"),
    [
        ("AUTOML_POLL_INTERVAL", "99999", "worker", "less than or equal to 3600"),
        ("AUTOML_THREADS", "abc", "worker", "a valid integer"),
        ("AUTOML_THREADS", "0", "worker", "greater than or equal to 1"),
        ("AUTOML_PORT", "abc", "serve", "a valid integer"),
        ("AUTOML_ARTIFACT_STORE", "folderx", "worker", "'auto', 'folder', 'sql' or 's3'"),
        ("AUTOML_ALLOW_ANONYMOUS", "maybe", "serve", "true or false (1/0, on/off, yes/no)"),
        ("AUTOML_LIMIT_MAX_TRIALS", "-5", "worker", "greater than or equal to 1"),
    ],
)
def test_an_invalid_variable_is_named_with_its_value_and_what_is_valid(
    cli: Run, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, command: str, valid: str
) -> None:
    """Once ``invalid setting poll_interval: ...``: the field, not the variable."""
    monkeypatch.setenv(variable, value)

    code, _, err = cli(command)

    assert code == 2
    line = error_line(err)
    assert line.startswith(f"error: invalid setting {variable}={value}: Input should be "), line
    assert valid in line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["worker", "--threads", "0"], "--threads 0: Input should be greater than or equal to 1"),
        (["serve", "--workers", "100"], "--workers 100: Input should be less than or equal to 64"),
    ],
)
def test_an_invalid_flag_is_named_as_typed(cli: Run, argv: list[str], named: str) -> None:
    code, _, err = cli(*argv)

    assert code == 2
    assert error_line(err) == f"error: invalid setting {named}"


def test_a_rule_between_settings_names_both_variables(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOML_HEARTBEAT_INTERVAL", "40")

    code, _, err = cli("worker")

    assert code == 2
    assert error_line(err).startswith(
        "error: invalid setting AUTOML_GRACE_PERIOD=60: must exceed twice "
        "AUTOML_HEARTBEAT_INTERVAL (40 s)"
    )


def test_a_secret_setting_is_named_without_its_value() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(api_key=12345)  # type: ignore[arg-type]

    assert (
        settings_error(refused.value) == "AUTOML_API_KEY=<hidden>: Input should be a valid string"
    )


def _not_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "cache"


def test_a_worker_without_a_usable_cache_folder_refuses_to_start(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once every trial on an image folder failed on its own, the worker idling on."""
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(_not_a_folder(tmp_path)))

    code, _, err = cli("worker", "--exit-when-idle")

    assert code == 2
    assert error_line(err) == (
        f"error: cannot use the cache folder '{_not_a_folder(tmp_path)}' (AUTOML_CACHE_DIR): "
        "Not a directory; set AUTOML_CACHE_DIR to a folder automl can create and write in"
    )


def test_run_refuses_an_unusable_cache_folder_too(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_data()), encoding="utf-8")
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(_not_a_folder(tmp_path)))

    code, _, err = cli("run", str(spec))

    assert code == 2
    assert "(AUTOML_CACHE_DIR): Not a directory" in error_line(err)


def _refuse_files_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Makes ``folder`` refuse new files, as a read-only mount does (also for root)."""
    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: str | Path | None = None, **kwargs: Any) -> tuple[int, str]:
        if dir is not None and Path(dir) == folder:
            raise PermissionError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize(
    ("variable", "what"), [("AUTOML_CACHE_DIR", "cache"), ("AUTOML_ARTIFACTS_DIR", "artifacts")]
)
def test_a_worker_refuses_a_folder_it_cannot_write_in(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, what: str
) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    monkeypatch.setenv(variable, str(folder))
    _refuse_files_in(monkeypatch, folder)

    code, _, err = cli("worker", "--exit-when-idle")

    assert code == 2
    assert error_line(err) == (
        f"error: cannot use the {what} folder '{folder}' ({variable}): Read-only file "
        f"system; set {variable} to a folder automl can create and write in"
    )


@pytest.mark.parametrize("command", ["worker", "serve", "up", "run", "worker --slots 2"])
def test_an_artifacts_folder_that_cannot_be_created_is_refused_at_the_start(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    """Once exit 1 and "cannot open the artifact store: [Errno 20] ...": the folder store
    failed to create it before the worker's own check of its folders could say which."""
    folder = _not_a_folder(tmp_path)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(folder))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_data()), encoding="utf-8")
    argv = {
        "worker": ["worker", "--exit-when-idle"],
        "serve": ["serve", "--port", str(free_port())],
        "up": ["up", "--port", str(free_port())],
        "run": ["run", str(spec)],
        "worker --slots 2": ["worker", "--slots", "2", "--exit-when-idle"],
    }[command]

    code, _, err = cli(*argv)

    assert code == 2
    assert error_line(err) == (
        f"error: cannot use the artifacts folder '{folder}' (AUTOML_ARTIFACTS_DIR): Not a "
        "directory; set AUTOML_ARTIFACTS_DIR to a folder automl can create and write in"
    )


def test_a_worker_with_usable_folders_starts_and_creates_its_cache(
    cli: Run, tmp_path: Path
) -> None:
    code, _, err = cli("worker", "--exit-when-idle")

    assert code == 0, err
    assert (tmp_path / "cache").is_dir()
    assert list((tmp_path / "cache").iterdir()) == []  # the write probe left nothing


def _threads_help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    found = re.search(r"--threads THREADS (.*?) --storage", text)
    assert found, text
    return found[1]


@pytest.mark.parametrize("command", ["up", "worker"])
def test_the_threads_help_says_the_cores_are_divided(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Once ``(default: all)``, while ``up`` and ``worker --slots/--gpus`` give each worker
    process the cores divided by their number (``automl.cli.supervisor``)."""
    shown = _threads_help(capsys, command)

    assert "default: all" not in shown
    assert "$AUTOML_THREADS" in shown
    assert "cores divided among the" in shown
