"""Argument types for the parser: whole numbers within what the store and API accept.

An id past a 32-bit integer column would reach the database as an overflow (a traceback);
argparse refuses it instead, with its usage line and one ``error:`` line (exit code 2).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from automl.config import MAX_ID, MAX_POLL_INTERVAL_S
from automl.delivery.schemas import MAX_TOP


def _bounded(text: str, low: int, what: str) -> int:
    return _ranged(text, low, MAX_ID, what)


def study_id(text: str) -> int:
    """A study id: a whole number from 0 to ``MAX_ID``."""
    return _bounded(text, 0, "study ids")


def trial_number(text: str) -> int:
    """A trial's number within its study: a whole number from 0 to ``MAX_ID``."""
    return _bounded(text, 0, "trial numbers")


def count(text: str) -> int:
    """A positive count (trials to add, rows to list...): 1 to ``MAX_ID``."""
    return _bounded(text, 1, "counts")


def non_negative(text: str) -> int:
    """A count that may be zero: 0 to ``MAX_ID``."""
    return _bounded(text, 0, "counts")


MAX_PORT = 65535


def _ranged(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is out of range: {what} are {low} to {high}")
    return value


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``what`` names them)."""

    def parse(text: str) -> int:
        return _ranged(text, low, high, what)

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    return _ranged(text, 1, MAX_PORT, "ports")


def proxy_port(text: str) -> int:
    """The proxy's port, 1 to 65534: coordination listens on the next one."""
    return _ranged(text, 1, MAX_PORT - 1, "proxy ports (coordination takes port + 1)")


def concurrency(text: str) -> int:
    """Calls served at once: 1 to 1024."""
    return _ranged(text, 1, 1024, "concurrency values")


def poll_seconds(text: str) -> float:
    """Seconds between idle polls: more than 0, at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_POLL_INTERVAL_S:
        raise argparse.ArgumentTypeError(
            f"{text} is out of range: poll intervals are more than 0, at most "
            f"{MAX_POLL_INTERVAL_S:.0f} s"
        )
    return value


def top_count(text: str) -> int:
    """Classes listed per image by predict and annotate: 1 to ``MAX_TOP``, as over the API."""
    return _ranged(text, 1, MAX_TOP, "classes per image")


MAX_IDEMPOTENCY_KEY = 256
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")


def idempotency_key(text: str) -> str:
    """A submission's idempotency key: 1 to 256 visible ASCII characters (an HTTP header
    value, and the store's column)."""
    if not 1 <= len(text) <= MAX_IDEMPOTENCY_KEY or not _KEY_CHARACTERS.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, no spaces"
        )
    return text
