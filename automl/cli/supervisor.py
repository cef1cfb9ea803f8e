"""Child processes: ``automl up`` (the API, its workers and optionally optuna-dashboard,
stopped together) and ``automl worker --gpus/--slots`` (one worker process per GPU and
slot)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from automl.config import Settings

logger = logging.getLogger("automl.up")

STOP_TIMEOUT_S = 60.0
CTRL_C_GRACE_S = 10.0
CLEAN_EXIT_CODES = (0, EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Waits before restarting a crashed child, one per crash in a row; after the last, it is
not restarted (a child that keeps crashing is misconfigured, not unlucky)."""
STEADY_S = 60.0
"""A child that ran this long before crashing starts a new row of restarts."""


@dataclass(frozen=True)
class Child:
    """One child process.

    Attributes:
        argv: Its command line.
        env: Variables it gets on top of ours.
        restart: Restarted when it crashes (workers: a trial that crashes its process
            must not take the API and the other workers down with it).
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = False


def serve_child(settings: Settings, log_level: str) -> Child:
    """The API server."""
    argv = [*_base(log_level), "serve", "--host", settings.host, "--port", str(settings.port)]
    return Child([*argv, *_common(settings)], _common_env(settings))


DASHBOARD_HOST = "127.0.0.1"
"""Where ``automl up`` serves the dashboard, whatever the API's host: it knows no keys or
projects, so next to an API on ``0.0.0.0`` it would show every project's studies to anyone
(``automl dashboard --host`` exposes it on purpose)."""


def dashboard_child(settings: Settings, log_level: str, port: int) -> Child:
    """optuna-dashboard (``automl dashboard``) on loopback, ``port``."""
    argv = [*_base(log_level), "dashboard", "--host", DASHBOARD_HOST, "--port", str(port)]
    return Child([*argv, *_common(settings)], _common_env(settings))


def worker_children(
    settings: Settings,
    log_level: str,
    *,
    gpus: Sequence[str] | None = None,
    slots: int = 1,
    extra: Sequence[str] = (),
    slot_dir: Path | None = None,
) -> list[Child]:
    """The worker processes: ``slots`` per GPU (each seeing only its GPU), or on the CPU.

    Args:
        settings: The parent's settings (storage, artifacts, device, threads).
        log_level: The children's log level.
        gpus: CUDA device ids or UUIDs to use (see ``resolve_gpus``); None for workers on
            ``settings.device`` (``--slots`` processes sharing the CPU cores).
        slots: Trial processes per device.
        extra: More worker arguments (``--study``, ``--exit-when-idle``...).
        slot_dir: Folder of the slot groups' lock files; None: the slots of a device
            do not coordinate (no trial can run alone).

    Returns:
        One child per worker; the CPU cores are split between them unless
        ``settings.threads`` says otherwise.
    """
    devices: list[str | None] = list(gpus) if gpus is not None else [None]
    count = len(devices) * slots
    threads = settings.threads or max(1, (os.cpu_count() or 1) // max(count, 1))
    children = []
    for gpu in devices:
        device = "cuda" if gpu is not None else settings.device
        argv = [*_base(log_level), "worker", "--device", device, "--threads", str(threads)]
        env = _common_env(settings)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        if slots > 1 and slot_dir is not None:
            env["AUTOML_SLOT_GROUP"] = str(slot_dir / ("cpu" if gpu is None else f"gpu-{gpu}"))
        children += [
            Child([*argv, *_common(settings), *extra], env, restart=True) for _ in range(slots)
        ]
    return children


def resolve_gpus(text: str) -> list[str]:
    """The GPUs that ``--gpus`` names: ``all`` (every visible one) or ``0,1,...``.

    Raises:
        ValueError: If no GPU is visible, or a listed one does not exist.
    """
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [v for v in visible if v]
    if not visible and "CUDA_VISIBLE_DEVICES" not in os.environ:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())]
    if text.strip() == "all":
        if not visible:
            raise ValueError("--gpus all: no CUDA GPU is visible on this machine")
        return visible
    wanted = [v.strip() for v in text.split(",")]
    if not all(wanted) or len(set(wanted)) != len(wanted):
        raise ValueError(f"--gpus {text!r}: expected 'all' or distinct ids like 0,1")
    missing = [v for v in wanted if v not in visible]
    if missing:
        shown = ", ".join(visible) or "none"
        raise ValueError(f"--gpus {text}: no GPU {', '.join(missing)} (visible: {shown})")
    return wanted


def _base(log_level: str) -> list[str]:
    return [sys.executable, "-m", "automl", "--log-level", log_level]


def _common(settings: Settings) -> list[str]:
    return ["--artifacts-dir", str(settings.artifacts_dir)]


def _common_env(settings: Settings) -> dict[str, str]:
    """The storage URL, in the environment: on a command line, its password would show to
    every user of the machine (``ps``) and in the log line of a restart."""
    return {"AUTOML_STORAGE": settings.storage}


def run_children(children: Sequence[Child], *, stop_all_when_one_exits: bool) -> int:
    """Starts the children and waits for them; SIGTERM or Ctrl-C stops them all.

    A child that crashes (any exit but a clean one or a stop signal) is restarted if it
    says so (``Child.restart``), after a wait that grows with each crash in a row; one
    that crashes ``len(RESTART_DELAYS_S) + 1`` times in a row, each within ``STEADY_S`` of
    its start, is given up. The children die with this process (a parent-death signal on
    Linux), so a ``kill -9`` of it leaves no worker behind.

    Args:
        children: What to start.
        stop_all_when_one_exits: ``automl up``: the API and its workers live and die
            together (a worker that is restarted does not count as exited). Otherwise
            (``automl worker --slots``) each child runs until it exits by itself
            (``--exit-when-idle``, ``--study``).

    Returns:
        0 when every child exited cleanly (130 after a Ctrl-C); 2 when those that did not
        exited with bad input (2: an argument or setting each of them refused); else 1.
    """
    supervised = [_Supervised(child) for child in children]
    for entry in supervised:
        entry.start()
    previous = signal.signal(signal.SIGTERM, _terminate)
    grace = 0.0
    interrupted = False
    try:
        while not all(entry.finished for entry in supervised):
            time.sleep(0.5)
            if _one_pass(supervised) and stop_all_when_one_exits:
                logger.warning("a child process exited: stopping all")
                break
    except _Terminated:
        logger.info("terminated: stopping all")
    except KeyboardInterrupt:
        # A terminal's Ctrl-C already reached every child (one process group): let them
        # stop on their own before forwarding SIGTERM to any that are still running.
        logger.info("interrupted: stopping all")
        grace, interrupted = CTRL_C_GRACE_S, True
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop_all([entry.process for entry in supervised if entry.process is not None], grace)
        for entry in supervised:
            if entry.restart_at is None and entry.process is not None:
                entry.returncode = entry.process.returncode
    failed = [entry.returncode for entry in supervised if entry.returncode not in CLEAN_EXIT_CODES]
    if failed:
        logger.error("child processes exited with codes %s", failed)
        return EXIT_BAD_INPUT if all(code == EXIT_BAD_INPUT for code in failed) else 1
    return EXIT_INTERRUPTED if interrupted else 0


class _Supervised:
    """One child, its current process and its crashes in a row."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.crashes = 0
        self.restart_at: float | None = None
        self.returncode: int | None = None
        self.finished = False
        """Ended for good (not to be restarted)."""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.child.argv,
            env={**os.environ, **self.child.env},
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self.started_at, self.restart_at, self.returncode = time.monotonic(), None, None

    def ended(self) -> bool:
        """Notes how the process ended; True if the child is done (not to be restarted)."""
        assert self.process is not None
        code = self.returncode = self.process.returncode
        if code in CLEAN_EXIT_CODES:
            return True
        logger.error("child %s exited with code %s", self.process.pid, code)
        if not self.child.restart or code == EXIT_BAD_INPUT:  # bad input fails every time
            return True
        if time.monotonic() - self.started_at >= STEADY_S:
            self.crashes = 0
        if self.crashes >= len(RESTART_DELAYS_S):
            logger.error(
                "child %s crashed %d times in a row: not restarted",
                self.process.pid,
                self.crashes + 1,
            )
            return True
        delay = RESTART_DELAYS_S[self.crashes]
        self.crashes += 1
        logger.warning("restarting it in %.0f s: %s", delay, " ".join(self.child.argv[1:]))
        self.restart_at = time.monotonic() + delay
        return False


def _one_pass(supervised: list[_Supervised]) -> bool:
    """Restarts the children whose wait is over and notes the ones that ended; True if
    one ended for good."""
    done = False
    for entry in supervised:
        if entry.finished:
            continue
        if entry.restart_at is not None:
            if time.monotonic() >= entry.restart_at:
                entry.start()
        elif not entry.alive:
            entry.finished = entry.ended()
            done = done or entry.finished
    return done


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child receive SIGTERM when ``parent`` dies (Linux's
    ``PR_SET_PDEATHSIG``); None where there is no such call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


_PR_SET_PDEATHSIG = 1


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
