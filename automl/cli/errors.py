"""Exit codes and the one-line error every CLI command reports failures with.

Exit codes: 0 success; 1 runtime failure (study failed, storage or API unreachable);
2 bad input (invalid spec, unknown study, bad arguments); 130 interrupted.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A failure to report as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


MAY_HAVE_CHANGED = (
    " (the change may have been made before the connection failed: look (automl status, "
    "trials, keys list) before running the command again)"
)
"""Said of a command that changes the store when the database or the API failed under it: a
commit whose answer was lost took effect (a tester's retried extend added its trials
twice)."""


def may_have_submitted(key: str) -> str:
    """Said of a submission cut off by the database or the API: the study may be there."""
    return (
        f" (the study may have been submitted before the connection failed: run the same "
        f"command with --idempotency-key {key} to submit it at most once)"
    )
