"""Path parameters shared by the routes, bounded to what the database can hold.

Ids and trial numbers are 32-bit integer columns: an unbounded ``int`` would reach the
database as an overflow (SQLite) or ``integer out of range`` (PostgreSQL), a 500. Every
route names its ids with these aliases, so an id out of range is a 422 naming the path
parameter, before any query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ID = 2**31 - 1
"""The largest id or trial number: the top of a signed 32-bit integer column."""

StudyId = Annotated[
    int, Path(ge=0, le=MAX_ID, description="The study's id (from `POST /studies`).")
]
TrialNumber = Annotated[
    int, Path(ge=0, le=MAX_ID, description="The trial's number within its study (from 0).")
]
Id = Annotated[int, Path(ge=0, le=MAX_ID, description="The resource's id.")]
"""Any other id in a path (an API key's, say): bounded as ``StudyId`` is."""
