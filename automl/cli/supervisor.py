"""``automl up``: the API and N workers as child processes, stopped together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from automl.config import Settings

logger = logging.getLogger("automl.up")

STOP_TIMEOUT_S = 60.0
CTRL_C_GRACE_S = 10.0
CLEAN_EXIT_CODES = (0, -signal.SIGINT, -signal.SIGTERM)


def child_commands(settings: Settings, workers: int, log_level: str) -> list[list[str]]:
    """The command lines of the API server and of each worker."""
    base = [sys.executable, "-m", "automl", "--log-level", log_level]
    common = ["--storage", settings.storage, "--artifacts-dir", str(settings.artifacts_dir)]
    serve = [*base, "serve", "--host", settings.host, "--port", str(settings.port), *common]
    threads = settings.threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
    worker = [*base, "worker", "--device", settings.device, "--threads", str(threads), *common]
    return [serve] + [list(worker) for _ in range(workers)]


def run_services(settings: Settings, workers: int, log_level: str) -> int:
    """Starts the children and waits; if one exits or we are interrupted, stops all.

    Several workers share the machine's cores (``--threads``, unless set).

    Returns:
        0 when every child exited cleanly, else 1.
    """
    children = [
        subprocess.Popen(command) for command in child_commands(settings, workers, log_level)
    ]
    logger.info(
        "API on http://%s:%s with %d worker(s); Ctrl-C stops all",
        settings.host,
        settings.port,
        workers,
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    grace = 0.0
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        dead = next(child for child in children if child.poll() is not None)
        logger.warning("a child process exited (code %s): stopping all", dead.returncode)
    except _Terminated:
        logger.info("terminated: stopping all")
    except KeyboardInterrupt:
        # A terminal's Ctrl-C already reached every child (one process group): let them
        # stop on their own before forwarding SIGTERM to any that are still running.
        logger.info("interrupted: stopping all")
        grace = CTRL_C_GRACE_S
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all(children, grace)
    failed = [c.returncode for c in children if c.returncode not in CLEAN_EXIT_CODES]
    if failed:
        logger.error("child processes exited with codes %s", failed)
        return 1
    return 0


class _Terminated(KeyboardInterrupt):
    """``automl up`` itself received SIGTERM (its children did not)."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _stop_all(children: list[subprocess.Popen[bytes]], grace: float) -> None:
    _wait_all(children, grace, kill=False)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    _wait_all(children, STOP_TIMEOUT_S, kill=True)


def _wait_all(children: list[subprocess.Popen[bytes]], seconds: float, kill: bool) -> None:
    deadline = time.monotonic() + seconds
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            if kill:
                child.kill()
                child.wait()
