"""How errors and answers show what a user gave: a value (``Input should be a valid
integer (got "many")``), a file's name."""

from __future__ import annotations

import json
import os
from pathlib import Path

_VALUE_ERRORS = frozenset(
    {
        "literal_error",
        "enum",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "multiple_of",
        "string_too_short",
        "string_too_long",
    }
)
"""Pydantic's error kinds about a value of the right type that is out of bounds."""


def shows_input(kind: str) -> bool:
    """Whether an error of pydantic's ``kind`` reads better with the value given: a
    wrong type or an out-of-bounds value (``a valid integer (got "many")``)."""
    return kind.endswith(("_type", "_parsing", "_from_float")) or kind in _VALUE_ERRORS


_SHOWN_CHARS = 40
"""Characters of a given value shown in an error; longer ones are cut."""


def shown_input(value: object) -> str:
    """The value given, as the spec's YAML or JSON would write it, cut short (a string
    of 100,000 characters or a number of 4,000 digits is named, not repeated)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):  # cut before it is escaped: never inside an escape
        return json.dumps(value[:_SHOWN_CHARS] + "..." if len(value) > _SHOWN_CHARS else value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return type(value).__name__
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


__all__ = ["shown_input", "shows_input"]


def shown_path(path: Path | str) -> str:
    """A file's name as typed, as text that prints and serializes: bytes that are not
    UTF-8 (a name from another system's encoding) become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")
