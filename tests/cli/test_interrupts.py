"""Ctrl-C and SIGTERM: ``serve``, ``dashboard`` and ``proxy`` exit 130 after SIGINT and 0
after SIGTERM, as ``worker``, ``run`` and ``up`` do; a Ctrl-C while the CLI imports exits
130 without a traceback; nothing logs noise on the way out."""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from automl.cli import entry
from automl.cli.errors import EXIT_INTERRUPTED, EXIT_OK
from tests.conftest import free_port, free_port_pair, wait_healthy
from tests.forked import ForkedProcess

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
STOPS = [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_OK)]


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """``entry.run`` leaves its process exiting: SIGINT ignored (which processes started
    later would inherit) and its objects frozen. This test process goes on."""
    import gc

    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)
    gc.unfreeze()


def _wait_for(log: Path, text: str, process: ForkedProcess) -> None:
    """Waits until ``text`` shows in ``log``; fails if ``process`` exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, f"no {text!r}:\n{log.read_text(errors='replace')}"
        time.sleep(0.1)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[list[str]], tuple[ForkedProcess, Path]]]:
    """Starts ``automl ARGS`` on a fresh SQLite store; kills what a test leaves running."""
    processes: list[ForkedProcess] = []

    def start(args: list[str]) -> tuple[ForkedProcess, Path]:
        log = tmp_path / f"{args[0]}.log"
        log.touch()
        flags = ["--storage", f"sqlite:///{tmp_path / 'stop.db'}"]
        flags += ["--artifacts-dir", str(tmp_path / "artifacts")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        processes.append(ForkedProcess([*args, *flags], env, log, cwd=tmp_path))
        return processes[-1], log

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _stopped(process: ForkedProcess, log: Path, stop: signal.Signals) -> int:
    process.send_signal(stop)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit {STOP_TIMEOUT_S}s after {stop.name}:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), STOPS)
def test_serve_exits_130_after_ctrl_c_and_0_after_sigterm(
    started: Callable[[list[str]], tuple[ForkedProcess, Path]], stop: signal.Signals, code: int
) -> None:
    """Once 0 after SIGINT (uvicorn returns) and killed by SIGTERM (uvicorn raises it again
    once it has shut down)."""
    port = free_port()
    process, log = started(["serve", "--port", str(port)])
    wait_healthy(f"http://127.0.0.1:{port}", process, log.read_text, START_TIMEOUT_S)

    assert _stopped(process, log, stop) == code, log.read_text()
    assert "Finished server process" in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), STOPS)
def test_dashboard_exits_130_after_ctrl_c_and_0_after_sigterm(
    started: Callable[[list[str]], tuple[ForkedProcess, Path]], stop: signal.Signals, code: int
) -> None:
    process, log = started(["dashboard", "--port", str(free_port())])
    _wait_for(log, "optuna-dashboard on http://", process)

    assert _stopped(process, log, stop) == code, log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), STOPS)
def test_proxy_exits_130_after_ctrl_c_and_0_after_sigterm(
    started: Callable[[list[str]], tuple[ForkedProcess, Path]], stop: signal.Signals, code: int
) -> None:
    process, log = started(["proxy", "--port", str(free_port_pair())])
    _wait_for(log, "automl proxy: workers use", process)

    assert _stopped(process, log, stop) == code, log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_a_proxy_reachable_from_other_machines_warns_that_it_has_no_authentication(
    started: Callable[[list[str]], tuple[ForkedProcess, Path]], host: str, warned: bool
) -> None:
    port = free_port_pair()
    process, log = started(["proxy", "--host", host, "--port", str(port)])
    _wait_for(log, "automl proxy: workers use", process)

    warning = f"automl proxy on {host} has no authentication: anyone who reaches ports {port} "
    assert (warning in log.read_text()) is warned
    assert _stopped(process, log, signal.SIGTERM) == 0


# --- Ctrl-C while the CLI imports ---------------------------------------------------------------


class _Interrupting(importlib.abc.MetaPathFinder):
    """Finds ``automl.cli.main`` by being interrupted: a Ctrl-C while it imports."""

    def __init__(self, interrupt: Callable[[], None]) -> None:
        self.interrupt = interrupt

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "automl.cli.main":
            self.interrupt()


def _import_interrupted_by(interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "automl.cli.main", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Interrupting(interrupt), *sys.meta_path])


def test_a_ctrl_c_while_importing_the_cli_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once an import traceback (the console script imported the CLI unguarded)."""

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    _import_interrupted_by(ctrl_c, monkeypatch)

    assert entry.run() == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"


class _Panic(BaseException):
    """What pydantic-core raises when a Ctrl-C interrupts its own imports."""


needs_python_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="SIGINT is not Python's default here",
)


@needs_python_sigint
def test_an_extension_that_fails_on_ctrl_c_while_importing_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def ctrl_c_turned_into_a_panic() -> None:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise _Panic("failed to import `datetime` C API") from None

    _import_interrupted_by(ctrl_c_turned_into_a_panic, monkeypatch)

    assert entry.run() == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
    # Not the import guard's handler: ignored, as the process exits.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


@needs_python_sigint
def test_a_ctrl_c_whose_error_is_swallowed_while_importing_still_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in CI: a Ctrl-C landing in a module lock's callback was only reported
    ("Exception ignored in ..."), the import went on, and the worker ran for good."""

    def ctrl_c_swallowed() -> None:
        with contextlib.suppress(KeyboardInterrupt):  # as Python does in a weakref callback
            signal.raise_signal(signal.SIGINT)

    _import_interrupted_by(ctrl_c_swallowed, monkeypatch)

    assert entry.run() == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"


def test_an_import_error_without_ctrl_c_is_not_taken_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise _Panic("a real failure")

    _import_interrupted_by(broken, monkeypatch)

    with pytest.raises(_Panic):
        entry.run()


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "automl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "automl"]


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_the_console_script_interrupted_while_importing_prints_no_traceback(
    tmp_path: Path,
) -> None:
    """A real Ctrl-C while the CLI imports pydantic's settings (the first ~0.2 s)."""
    command = [*_console_script(), "worker", "--storage", f"sqlite:///{tmp_path / 'i.db'}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _loaded(process.pid, "_pydantic_core"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.02)  # past pydantic-core's own start, into the CLI's imports
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "interrupted"


# --- what logs on the way out -------------------------------------------------------------------

TORCH_AT_EXIT = """
from automl.cli.main import _configure_logging
_configure_logging({level!r})
import logging
logging.getLogger("torch._subclasses.fake_tensor").info("FakeTensor cache stats:")
"""


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_torch_stopped_while_importing_logs_no_cache_stats(level: str, shown: bool) -> None:
    """Ctrl-C on ``automl up`` while a worker imported torch logged torch's FakeTensor
    cache statistics at INFO through automl's handler: torch's own logging setup, which
    quiets it, had not run yet."""
    done = subprocess.run(
        [sys.executable, "-c", TORCH_AT_EXIT.format(level=level)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert ("FakeTensor cache stats" in done.stderr) is shown


def test_the_cli_exits_quietly_once_it_has_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interpreter's last collection over torch's objects took 1 to 3 s of every
    command's exit: the objects are frozen (``gc.freeze``), so it skips them."""
    import gc

    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\n")
    monkeypatch.setattr(sys, "argv", ["automl", "validate", str(spec)])
    gc.unfreeze()
    assert entry.run() == EXIT_OK
    assert gc.get_freeze_count() > 0
    # A verifier: a Ctrl-C during the shutdown after a full report killed the process.
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
