"""Path parameters shared by the routes, bounded to what the database can hold.

Ids and trial numbers are 32-bit integer columns: an unbounded ``int`` would reach the
database as an overflow (SQLite) or ``integer out of range`` (PostgreSQL), a 500. Every
route names its ids with these aliases, so an id out of range is a 422 naming the path
parameter, before any query.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator

from automl.config import MAX_ID

_DIGITS = re.compile(r"[0-9]{1,10}")


def _plain_digits(value: Any) -> Any:
    """Refuses what ``int()`` would read but no id looks like (``7_0``, ``+7``, `` 7``), and
    ids past ``MAX_ID`` with the same words, however many digits they have."""
    if isinstance(value, str) and (not _DIGITS.fullmatch(value) or int(value) > MAX_ID):
        raise ValueError(f"{value!r} is not an id: a whole number from 0 to {MAX_ID}")
    return value


_Digits = BeforeValidator(_plain_digits)

StudyId = Annotated[
    int, Path(ge=0, le=MAX_ID, description="The study's id (from `POST /studies`)."), _Digits
]
TrialNumber = Annotated[
    int,
    Path(ge=0, le=MAX_ID, description="The trial's number within its study (from 0)."),
    _Digits,
]
Id = Annotated[int, Path(ge=0, le=MAX_ID, description="The resource's id."), _Digits]
"""Any other id in a path (an API key's, say): bounded as ``StudyId`` is."""
