"""``automl up``: the API and N workers as child processes, stopped together."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

from automl.config import Settings

logger = logging.getLogger("automl.up")

STOP_TIMEOUT_S = 60.0


def child_commands(settings: Settings, workers: int, log_level: str) -> list[list[str]]:
    """The command lines of the API server and of each worker."""
    base = [sys.executable, "-m", "automl", "--log-level", log_level]
    common = ["--storage", settings.storage, "--artifacts-dir", str(settings.artifacts_dir)]
    serve = [*base, "serve", "--host", settings.host, "--port", str(settings.port), *common]
    return [serve] + [
        [*base, "worker", "--device", settings.device, "--seed-offset", str(index), *common]
        for index in range(workers)
    ]


def run_services(settings: Settings, workers: int, log_level: str) -> int:
    """Starts the children and waits; if one exits or we are interrupted, stops all.

    Returns:
        0 after Ctrl-C/SIGTERM, 1 if a child died on its own.
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
    previous = signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        dead = next(child for child in children if child.poll() is not None)
        logger.error("a child process exited with code %s; stopping all", dead.returncode)
        code = 1
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all(children)
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
