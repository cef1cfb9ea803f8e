"""How a command that serves until stopped ends: 130 after Ctrl-C, 0 after SIGTERM.

Ctrl-C (SIGINT) is 130 for every command, as the README says; SIGTERM (``docker stop``,
systemd, ``automl up`` stopping its children) is a clean stop, 0. ``automl worker`` keeps
its own handlers (``Worker.stopped_by``); ``serve``, ``dashboard`` and ``proxy`` use these.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from automl.cli.errors import EXIT_INTERRUPTED, EXIT_OK

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_after(signum: int | None) -> int:
    """The exit code of a command that ``signum`` stopped (None: it stopped by itself).

    Returns:
        130 after SIGINT, else 0.
    """
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_OK


class StopSignals:
    """SIGINT and SIGTERM handlers, while in its ``with`` block, that note the first of
    them to arrive and then call ``on_stop``; the handlers from before come back after.

    Args:
        on_stop: Called in the handler with the signal's number; it may raise, to unwind
            what the main thread was doing.
    """

    def __init__(self, on_stop: Callable[[int], None]) -> None:
        self.stopped_by: int | None = None
        """The first stop signal received (None: none was)."""
        self._on_stop = on_stop
        self._previous: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        """130 if SIGINT came first, else 0."""
        return exit_code_after(self.stopped_by)

    def __enter__(self) -> StopSignals:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _: FrameType | None) -> None:
        if self.stopped_by is None:
            self.stopped_by = signum
        self._on_stop(signum)


def interrupt(_: int) -> None:
    """An ``on_stop`` that raises ``KeyboardInterrupt`` (what Python does on SIGINT), for
    SIGTERM too: servers that stop on it (uvicorn) then stop on either."""
    raise KeyboardInterrupt
