"""``automl serve``'s server: the API under uvicorn, in one process or several, ending with
130 after Ctrl-C and 0 after SIGTERM (see ``automl.cli.stops``).

uvicorn alone ends both ways alike: after SIGINT it returns (0), after SIGTERM it raises the
signal again once shut down, and the process dies of it.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import Multiprocess

from automl.cli.errors import EXIT_FAILURE, CliError
from automl.cli.stops import StopSignals, exit_code_after, interrupt
from automl.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

APP_FACTORY = "automl.api.app:create_app"
"""What each of several API processes builds its app with (from ``AUTOML_*``)."""


def serve_app(app: FastAPI, settings: Settings, log_level: str, access_log: bool = True) -> int:
    """Serves ``app`` in this process until SIGINT or SIGTERM.

    uvicorn sets its own handlers while it serves and, once shut down, raises the signal
    again under the handlers from before: these note which signal it was.

    Args:
        app: The API.
        settings: Where to listen.
        log_level: uvicorn's log level.
        access_log: Log one line per request.

    Returns:
        130 after SIGINT, else 0.
    """
    with StopSignals(interrupt) as stops:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=access_log,
            use_colors=colors_wanted(),
        )
    return stops.exit_code


def serve_processes(settings: Settings, log_level: str, access_log: bool = True) -> int:
    """Serves the API from ``settings.api_workers`` processes sharing the port, each
    building its app with ``APP_FACTORY``, until SIGINT or SIGTERM (``access_log``: one
    line per request).

    Returns:
        130 after SIGINT, else 0.

    Raises:
        CliError: If the processes stopped by themselves (they failed to start).
    """
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        workers=settings.api_workers,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=access_log,
        use_colors=colors_wanted(),
    )
    processes = ApiProcesses(config, sockets=[config.bind_socket()])
    processes.run()
    if processes.stopped_by is None:
        raise CliError("the API processes failed to start (see the log above)", EXIT_FAILURE)
    return exit_code_after(processes.stopped_by)


def colors_wanted() -> bool | None:
    """Whether uvicorn may color its log.

    Returns:
        False where the environment asks for no colors (``NO_COLOR``, as no-color.org
        says; ``TERM=dumb``); else None: uvicorn colors its log on a terminal.
    """
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return None


class ApiProcesses(Multiprocess):
    """uvicorn's supervisor of several processes, noting the signal that stopped it."""

    stopped_by: int | None = None

    def handle_int(self) -> None:
        """Stops on SIGINT."""
        self._stopped(signal.SIGINT)
        super().handle_int()

    def handle_term(self) -> None:
        """Stops on SIGTERM."""
        self._stopped(signal.SIGTERM)
        super().handle_term()

    def _stopped(self, signum: int) -> None:
        if self.stopped_by is None:
            self.stopped_by = signum
