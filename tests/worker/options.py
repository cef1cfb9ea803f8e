"""Worker options for tests: quick beats and polls, no reaper, exit when idle."""

from __future__ import annotations

from typing import Any

from automl.worker import WorkerOptions


def fast_options(**overrides: Any) -> WorkerOptions:
    """Options of an in-process test worker on the CPU, with ``overrides`` applied."""
    options: dict[str, Any] = {
        "device": "cpu",
        "exit_when_idle": True,
        "heartbeat_interval": 0.2,
        "reap_interval": None,
        "poll_interval": 0.05,
    }
    options.update(overrides)
    return WorkerOptions(**options)
