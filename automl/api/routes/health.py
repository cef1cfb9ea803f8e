"""Liveness, database reachability and schema presence."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from automl import __version__
from automl.api.deps import StoreDep
from automl.store import check_schema

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Service health."""

    status: str
    version: str
    storage: str


@router.get("/health", response_model=Health)
async def health(store: StoreDep) -> Health:
    """Ok when the database answers and holds the schema (503 otherwise)."""
    await run_in_threadpool(check_schema, store)
    return Health(status="ok", version=__version__, storage="ok")
