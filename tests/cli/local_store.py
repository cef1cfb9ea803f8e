"""The CLI against a local store holding one trained study (predict and report tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from automl.cli.main import main
from automl.config import Limits, Settings
from tests.conftest import store_at
from tests.delivery.trained import train_study

Run = Callable[..., tuple[int, str, str]]


def trained_store(root: Path, **study: Any) -> tuple[str, Path, int]:
    """A SQLite store in ``root`` with one trained digits study (``train_study(**study)``):
    (url, artifacts folder, study id)."""
    url = f"sqlite:///{root / 'automl.db'}"
    store = store_at(url, root)
    try:
        study_id = train_study(store, **study)
    finally:
        store.close()
    return url, root / "artifacts", study_id


READ_ONLY_COMMANDS = [
    ["status"],
    ["status", "1"],
    ["trials", "1"],
    ["best", "1"],
    ["wait", "1"],
    ["cancel", "1"],
    ["delete", "1"],
    ["report", "1"],
    ["export", "1", "out"],
    ["keys", "list"],
]
"""Commands that need an existing store: they must never create one."""


def clear_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes every ``AUTOML_*`` setting (limits included) the test run inherited."""
    for field in [*Settings.model_fields, *(f"limit_{name}" for name in Limits.model_fields)]:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)


def isolate_cli(monkeypatch: pytest.MonkeyPatch, storage_url: str, folder: Path) -> None:
    """Points the CLI at ``storage_url`` with its artifacts in ``folder``, run from there,
    and no other ``AUTOML_*`` setting."""
    clear_settings(monkeypatch)
    monkeypatch.setenv("AUTOML_STORAGE", storage_url)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(folder / "artifacts"))
    monkeypatch.chdir(folder)


def point_cli_at(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[str, Path, int], cwd: Path
) -> None:
    """Points the CLI at the trained store; no other ``AUTOML_*`` setting leaks in."""
    clear_settings(monkeypatch)
    url, artifacts, _ = trained
    monkeypatch.setenv("AUTOML_STORAGE", url)
    monkeypatch.setenv("AUTOML_ARTIFACTS_DIR", str(artifacts))
    monkeypatch.chdir(cwd)


def cli_runner(capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs ``main(args)``; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["--log-level", "WARNING", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
