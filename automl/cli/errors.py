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
