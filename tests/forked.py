"""``automl`` CLI processes forked from one interpreter that already imported the CLI.

Every ``python -m automl worker`` pays its imports (torch, optuna, the store) and, at its
first trial, the ones done lazily (scikit-learn for digits, ``torch._dynamo`` for the first
optimizer): about six CPU seconds, most of an end-to-end test on two cores when it starts a
dozen workers. A fork server that imported all of it once forks each worker instead; the
child then runs the CLI's own ``main`` with its own arguments, environment and log, and is a
real process to kill, stop and wait for like one started by ``subprocess``. What it skips is
the interpreter's start and those imports: tests that run ``python -m automl`` itself (in
tests/cli) cover them.

The fork server imports with ``OMP_NUM_THREADS=1``, so a forked process computes on one
thread unless its command sets ``--threads``.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from multiprocessing.context import ForkServerProcess
from pathlib import Path

PRELOAD = [
    "automl.cli.main",
    "automl.cli.commands",  # torch, optuna and the store
    "sklearn.datasets",  # what the digits loader imports at its first load
    "torch._dynamo",  # what a torch optimizer imports when first built
    __name__,
]
"""Imported once by the fork server, not by the test process."""

_CONTEXT = multiprocessing.get_context("forkserver")
_server_lock = threading.Lock()
_server_started = False
_live: weakref.WeakSet[ForkedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Kills forked processes a test left running. Registered after multiprocessing's own
    exit hook, so it runs first: that hook waits for every (non-daemon) child to end."""
    for process in list(_live):
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _run(argv: list[str], env: dict[str, str], log: str, cwd: str, new_session: bool) -> None:
    """The forked child: the CLI with ``argv``, ``env`` as its environment, output to ``log``,
    ``cwd`` as its working directory (in a session of its own if asked)."""
    if new_session:
        os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    from automl.cli.main import main

    sys.exit(main(argv))


def _ensure_server() -> None:
    """Starts the fork server once per test session, single-threaded BLAS and OpenMP like
    the workers, able to import this module wherever pytest was started."""
    global _server_started
    with _server_lock:
        if _server_started:
            return
        root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        server_env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
        saved = {name: os.environ.get(name) for name in server_env}
        os.environ.update(server_env)
        try:
            _CONTEXT.set_forkserver_preload(PRELOAD)
            forkserver.ensure_running()
            _server_started = True
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class ForkedProcess:
    """What the tests use of ``subprocess.Popen``, over a forked CLI process."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
        *,
        new_session: bool = False,
    ) -> None:
        """Forks ``automl <argv>`` with exactly ``env`` as its environment, its output
        (stdout and stderr) written to ``log``, in ``cwd`` (default: the log's folder, the
        test's own, so that default folders such as ``automl-cache`` land there); with
        ``new_session`` it leads a session and process group of its own (its pid is the
        group's id) by the time this returns."""
        _ensure_server()
        self.args = list(argv)
        workdir = str(cwd if cwd is not None else Path(log).resolve().parent)
        self._process: ForkServerProcess = _CONTEXT.Process(
            target=_run,
            args=(self.args, dict(env), str(log), workdir, new_session),
            daemon=False,
        )
        self._process.start()
        _live.add(self)
        if new_session:
            self._wait_for_own_group()

    def _wait_for_own_group(self) -> None:
        """Waits until the child called ``setsid``: until then its group is the fork
        server's, which a ``killpg`` must not reach."""
        deadline = time.monotonic() + 30
        while self.poll() is None and time.monotonic() < deadline:
            try:
                if os.getpgid(self.pid) == self.pid:
                    return
            except ProcessLookupError:
                return
            time.sleep(0.01)
        if self.poll() is None:
            raise AssertionError(f"the forked {self.args} did not start a session of its own")

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        """The exit code (negative: the signal that ended it), or None while it runs."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """Waits for the exit; raises ``subprocess.TimeoutExpired`` as ``Popen.wait`` does."""
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, signum: int) -> None:
        """Sends ``signum`` unless the process already ended."""
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
