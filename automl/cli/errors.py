"""Exit codes and the one-line error every CLI command reports failures with.

Exit codes: 0 success; 1 runtime failure (study failed, storage or API unreachable);
2 bad input (invalid spec, unknown study, bad arguments); 130 interrupted.
"""

from __future__ import annotations

import shlex

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A failure to report as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


MAY_HAVE_CHANGED = (
    " (the change may have been made before the command was cut off: look (automl status, "
    "trials, keys list) before running it again)"
)
"""Said of a command that changes the store when the database or the API failed under it: a
commit whose answer was lost took effect (a tester's retried extend added its trials
twice)."""


def may_have_submitted(key: str) -> str:
    """Said of a submission cut off (by the database, the API, or Ctrl-C) after it was
    sent: the study may be there. (``--idempotency-key=KEY``: a key may start with ``-``,
    which argparse takes for an option after a space.)"""
    return (
        " (the study may have been submitted before the command was cut off: run the same "
        f"command with --idempotency-key={shlex.quote(key)} to submit it at most once)"
    )
