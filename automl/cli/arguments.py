"""Argument types for the parser: whole numbers within what the store and API accept.

An id past a 32-bit integer column would reach the database as an overflow (a traceback);
argparse refuses it instead, with its usage line and one ``error:`` line (exit code 2).
"""

from __future__ import annotations

import argparse

MAX_ID = 2**31 - 1
"""The largest study id, trial number or count: the top of a signed 32-bit column."""


def _bounded(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"{text} is out of range: {what} are {low} to {MAX_ID}")
    return value


def study_id(text: str) -> int:
    """A study id: a whole number from 0 to ``MAX_ID``."""
    return _bounded(text, 0, "study ids")


def count(text: str) -> int:
    """A positive count (trials to add, rows to list...): 1 to ``MAX_ID``."""
    return _bounded(text, 1, "counts")


def non_negative(text: str) -> int:
    """A count that may be zero: 0 to ``MAX_ID``."""
    return _bounded(text, 0, "counts")
