"""The REST API (FastAPI)."""

from automl.api.app import create_app

__all__ = ["create_app"]
