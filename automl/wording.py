"""Counts in messages: "1 trial", "2 trials"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless ``count`` is 1.

    Args:
        count: How many.
        noun: The singular (``trial``).
        plural: The plural where it is not ``noun`` + ``s``.

    Returns:
        For example ``1 trial``, ``0 trials``, ``3 classes``.
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


__all__ = ["counted"]
