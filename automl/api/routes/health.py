"""Liveness and storage reachability."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from automl import __version__
from automl.api.deps import StorageDep
from automl.store import check_connection

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Service health."""

    status: str
    version: str
    storage: str


@router.get("/health", response_model=Health)
def health(storage: StorageDep) -> Health:
    """Returns ok when the storage answers (503 otherwise)."""
    check_connection(storage)
    return Health(status="ok", version=__version__, storage="ok")
