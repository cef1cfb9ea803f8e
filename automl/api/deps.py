"""FastAPI dependencies: the shared storage and settings, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from optuna.storages import BaseStorage

from automl.config import Settings


def get_storage(request: Request) -> BaseStorage:
    """The app's Optuna storage (one per process, thread-safe)."""
    return request.app.state.storage


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


StorageDep = Annotated[BaseStorage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
