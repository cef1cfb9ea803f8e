"""Map domain errors to JSON HTTP errors: 4xx for the caller's mistakes, 503 for storage."""

from __future__ import annotations

import logging

import sqlalchemy
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from automl.spec import SpecError
from automl.store import (
    NoBestTrialError,
    StorageError,
    StudyNotFoundError,
    StudyStateError,
    TrialNotFoundError,
    WeightsNotFoundError,
)

logger = logging.getLogger("automl.api")


class PayloadTooLargeError(ValueError):
    """The request body exceeds the configured limit."""


def _detail(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status_code)


def spec_error_response(exc: SpecError) -> JSONResponse:
    """422 in FastAPI's own validation-error shape, with ``loc`` under ``body``."""
    detail = [
        {"loc": ["body", *error.loc], "msg": error.msg, "type": "spec_error", "path": error.path}
        for error in exc.errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers on ``app``."""

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError) -> JSONResponse:
        return spec_error_response(exc)

    @app.exception_handler(StudyNotFoundError)
    @app.exception_handler(TrialNotFoundError)
    @app.exception_handler(NoBestTrialError)
    @app.exception_handler(WeightsNotFoundError)
    async def _not_found(_: Request, exc: LookupError) -> JSONResponse:
        return _detail(404, str(exc))

    @app.exception_handler(StudyStateError)
    async def _conflict(_: Request, exc: StudyStateError) -> JSONResponse:
        return _detail(409, str(exc))

    @app.exception_handler(PayloadTooLargeError)
    async def _too_large(_: Request, exc: PayloadTooLargeError) -> JSONResponse:
        return _detail(413, str(exc))

    @app.exception_handler(StorageError)
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def _storage(_: Request, exc: Exception) -> JSONResponse:
        logger.error("storage error: %s", exc)
        return _detail(503, "storage unavailable, try again later")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return _detail(500, "internal server error")
