"""Words in messages: counts ("1 trial", "2 trials"), values as a spec writes them, and
long reasons cut short."""

from __future__ import annotations

import json
from typing import Any


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


def first_few(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, comma-separated, then how many more there are
    (``a, b, c and 4 more``)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def as_written(value: Any) -> str:
    """``repr``, but with booleans and nulls as a spec (YAML or JSON) writes them
    (``true``, ``null``), inside lists and mappings too."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(as_written(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{as_written(k)}: {as_written(v)}" for k, v in value.items()) + "}"
    return repr(value)


__all__ = ["as_written", "counted"]


def clipped(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters and marked so, at a space where one is near
    the end (a library's error can run to pages)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit - 60, limit)
    return text[: cut if cut > 0 else limit] + " ..."
