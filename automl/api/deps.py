"""FastAPI dependencies: the shared store and settings, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from automl.config import Settings
from automl.store import Store


async def get_store(request: Request) -> Store:
    """The app's store (one per process, thread-safe).

    ``async`` so that FastAPI calls it on the event loop: a plain function would cost a
    trip through the thread pool on every request.
    """
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
