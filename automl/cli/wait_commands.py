"""``automl wait ID`` and ``automl submit --wait``: until a study and the jobs that follow it
(its test evaluation, a refit) end, then exit as ``automl run`` does.

A pipeline that submits to an API, or to a store that workers elsewhere serve, waits here
instead of polling ``status`` itself. Nothing here imports torch or the store's writers:
against the API (``--url``) it is a thin client.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, CliError
from automl.cli.output import study_text
from automl.config import Settings
from automl.store.attrs import StudyStatus
from automl.wording import counted

if TYPE_CHECKING:
    from automl.cli.client import Client
    from automl.store.views import StudyDetail

WAIT_POLL_S = 2.0
"""Seconds between two looks at the study."""

UNFINISHED_JOBS = frozenset({"pending", "queued", "running"})
"""States of a test evaluation or refit that a worker has yet to end."""


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    """Waits for ``args.study`` (see ``wait_for``)."""
    from automl.cli.study_commands import client_for

    check_timeout(args.timeout)
    return wait_for(client_for(settings), args.study, timeout=args.timeout, as_json=args.json)


def stopped_waiting(study_id: int) -> CliError:
    """What Ctrl-C during a wait says: the study goes on without the waiter."""
    return CliError(
        f"stopped waiting: study {study_id} goes on (automl wait {study_id})", EXIT_INTERRUPTED
    )


def check_timeout(timeout: float | None) -> None:
    """Refuses a ``--timeout`` that is not a positive number of seconds.

    Raises:
        CliError: If it is zero or negative (exit 2).
    """
    if timeout is not None and not timeout > 0:
        raise CliError(f"--timeout must be more than 0 seconds, not {timeout:g}", EXIT_BAD_INPUT)


def wait_for(client: Client, study_id: int, *, timeout: float | None, as_json: bool) -> int:
    """Waits until the study ended and no job of it is left, saying on stderr how far it
    got whenever that changes; then prints it as ``status`` does.

    Returns:
        ``EXIT_OK`` once it completed with a completed trial.

    Raises:
        CliError: If it ended otherwise (exit 1, the reason in the message), or is still
            going after ``timeout`` seconds (exit 1; it goes on).
    """
    try:
        study = _ended(client, study_id, timeout)
    except KeyboardInterrupt:
        raise stopped_waiting(study_id) from None
    if as_json:
        print(study.model_dump_json(indent=2))
    else:
        print(study_text(study))
    problem = outcome_problem(study)
    if problem is not None:
        raise CliError(problem, EXIT_FAILURE)
    return EXIT_OK


def _ended(client: Client, study_id: int, timeout: float | None) -> StudyDetail:
    """The study once it and its jobs ended, polled every ``WAIT_POLL_S``.

    Raises:
        CliError: If it is still going after ``timeout`` seconds.
    """
    started = time.monotonic()
    said = None
    while True:
        study = client.study(study_id)
        progress = _progress(study)
        if progress is None:
            return study
        if progress != said:
            print(progress, file=sys.stderr, flush=True)
            said = progress
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise CliError(
                f"study {study_id} is still {study.status.value} after {timeout:g} s "
                "(it goes on; wait again, or look with automl status)",
                EXIT_FAILURE,
            )
        remaining = WAIT_POLL_S if timeout is None else min(WAIT_POLL_S, timeout - waited)
        time.sleep(max(remaining, 0.0))


def _progress(study: StudyDetail) -> str | None:
    """How far the study got, in one line; None once it and its jobs ended."""
    if study.status.is_active:
        counts = study.counts
        return (
            f"study {study.id}: {study.status.value}, {counts.finished} of "
            f"{counted(study.n_trials, 'trial')} finished ({counts.running} running)"
        )
    for label, job in (("test evaluation", study.test_evaluation), ("refit", study.refit)):
        if job is not None and job.state in UNFINISHED_JOBS:
            return f"study {study.id}: {study.status.value}; its {label} is {job.state}"
    return None


def outcome_problem(final: StudyDetail) -> str | None:
    """What went wrong with a study seen to its end (by ``run``, ``worker --study`` or
    ``wait``), in one line; None when it completed with a completed trial."""
    if final.status.is_active:  # the worker left it: its log line says why
        return f"study {final.id} is still {final.status.value}: this worker left it"
    if final.status != StudyStatus.COMPLETED:
        return f"study {final.id} {final.status.value}: {final.status_reason}"
    if final.counts.complete == 0:
        counts = final.counts
        return (
            f"study {final.id} completed without a completed trial ({counts.fail} failed, "
            f"{counts.pruned} pruned)"
        )
    return None
