"""The ``automl`` console script and ``python -m automl``: the CLI, quiet when interrupted.

Importing the CLI takes a moment (pydantic, the settings); a Ctrl-C in it would print an
import traceback. Only this module and ``automl.cli.errors`` load before the guard: the
rest, ``signal`` included, loads inside it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from automl.cli.errors import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType


def run() -> int:
    """Imports and runs the CLI; returns the process exit code (130 if interrupted before
    the CLI could report it itself)."""
    try:
        main = _import_main()
        code = main()
    except KeyboardInterrupt:
        code = _interrupted()
    _quiet_exit()
    return code


def _quiet_exit() -> None:
    """Once the command has answered: a Ctrl-C while the interpreter shuts down is ignored
    (it killed the process by SIGINT after a full report, which scripts read as an
    interrupted run), and its last garbage collection is skipped (``_skip_last_collection``)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _skip_last_collection()


def _skip_last_collection() -> None:
    """Leaves what is left to the operating system at exit, uncollected: the interpreter's
    last garbage collection, over torch's objects, took 1 to 3 s of every command's exit
    (``automl status``, a worker stopped by ``docker stop``). Files and databases are
    closed before (context managers, ``finally``; logging and temporary folders by their
    own exit hooks, which still run)."""
    import gc

    gc.freeze()


def _import_main() -> Callable[[], int]:
    """``automl.cli.main.main``, imported with SIGINT noted.

    An extension module interrupted while it imports may raise something else than
    ``KeyboardInterrupt`` (pydantic-core panics), so any error after a SIGINT counts as the
    interruption, and so does a SIGINT whose error nothing raised. SIGINT left ignored (a
    background job) stays ignored.
    """
    import signal

    interrupted = False

    def note(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    guarded = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if guarded:
        signal.signal(signal.SIGINT, note)
    try:
        from automl.cli.main import main
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if guarded:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        # Raised where Python only reports it ("Exception ignored in" a module lock's
        # callback): the import went on, and the command would have run after a Ctrl-C.
        raise KeyboardInterrupt
    return main


def _interrupted() -> int:
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
