"""The FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from optuna.storages import BaseStorage

from automl import __version__
from automl.api.errors import install_error_handlers
from automl.api.routes import health, registries, studies
from automl.catalog import load_plugins
from automl.config import Settings
from automl.spec import StudySpec
from automl.store import create_storage


def create_app(settings: Settings | None = None, storage: BaseStorage | None = None) -> FastAPI:
    """Builds the API over the storage named by ``settings.storage``.

    Args:
        settings: Defaults to the ``AUTOML_*`` environment.
        storage: An already open storage (otherwise opened from ``settings.storage``).
    """
    settings = settings or Settings()
    load_plugins()
    app = FastAPI(
        title="automl",
        version=__version__,
        summary="Hyperparameter search for image recognition on Optuna's SQL store.",
    )
    app.state.settings = settings
    app.state.storage = storage or create_storage(settings.storage)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(registries.router)
    app.openapi = lambda: _openapi_with_spec_schema(app)  # type: ignore[method-assign]
    return app


def _openapi_with_spec_schema(app: FastAPI) -> dict[str, Any]:
    """OpenAPI document that also defines ``StudySpec`` (the raw-body request schema)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        spec_schema = StudySpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec_schema.pop("$defs", {}))
        components["StudySpec"] = spec_schema
        app.openapi_schema = schema
    return app.openapi_schema
