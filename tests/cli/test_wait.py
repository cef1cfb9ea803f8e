"""``automl wait ID`` and ``automl submit --wait``: until a study ends, exiting as ``run``
does. Found by a scripting tester: a pipeline had to poll ``automl status ID --json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from automl.cli import wait_commands
from tests.cli.local_store import Run, cli_runner, isolate_cli
from tests.conftest import tiny_spec_data


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> None:
    isolate_cli(monkeypatch, sqlite_url, tmp_path)
    monkeypatch.setattr(wait_commands, "WAIT_POLL_S", 0.2)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    return cli_runner(capsys)


def write_spec(tmp_path: Path, trials: int = 2) -> Path:
    spec = tmp_path / "spec.yaml"
    data = tiny_spec_data(name="waited", budget={"n_trials": trials, "max_failed": 0})
    spec.write_text(yaml.safe_dump(data))
    return spec


def test_a_cancelled_study_ends_the_wait_with_exit_1(cli: Run, tmp_path: Path) -> None:
    assert cli("submit", str(write_spec(tmp_path)))[0] == 0
    assert cli("cancel", "1")[0] == 0

    code, out, err = cli("wait", "1")

    assert code == 1
    assert out.startswith("study 1: waited\nstatus:    cancelled")
    assert err.splitlines() == ["error: study 1 cancelled: cancelled by request"]


def test_a_timeout_stops_waiting_and_the_study_goes_on(cli: Run, tmp_path: Path) -> None:
    assert cli("submit", str(write_spec(tmp_path)))[0] == 0
    started = time.monotonic()

    code, out, err = cli("wait", "1", "--timeout", "0.5")

    assert time.monotonic() - started < 30
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "study 1: queued, 0 of 2 trials finished (0 running)",
        "error: study 1 is still queued after 0.5 s (it goes on; wait again, or look with "
        "automl status)",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wait", "1", "--timeout", "0"], "error: --timeout must be more than 0 seconds, not 0"),
        (["submit", "SPEC", "--timeout", "5"], "error: --timeout goes with --wait"),
        (["wait", "7"], "error: study 7 not found"),
    ],
)
def test_bad_waits_are_one_line_exit_2(
    cli: Run, tmp_path: Path, args: list[str], message: str
) -> None:
    spec = write_spec(tmp_path)
    assert cli("submit", str(spec))[0] == 0
    code, out, err = cli(*[str(spec) if arg == "SPEC" else arg for arg in args])
    assert (code, out, err.strip()) == (2, "", message)
    assert json.loads(cli("status", "--json")[1])["count"] == 1  # nothing more submitted


@pytest.mark.slow
def test_submit_wait_returns_once_a_worker_elsewhere_completed_the_study(
    cli: Run, tmp_path: Path, sqlite_url: str
) -> None:
    """A worker process on the same store; the submit waits, then prints the study as
    it ended (one JSON document with --json) and exits 0."""
    env = {**os.environ, "AUTOML_STORAGE": sqlite_url, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "automl", "worker", "--poll-interval", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code, out, err = cli("submit", str(write_spec(tmp_path)), "--wait", "--json")
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    assert code == 0, err
    ended = json.loads(out)
    assert ended["status"] == "completed" and ended["counts"]["complete"] == 2
    assert err.splitlines()[0] == "submitted study 1 (waited): queued"
