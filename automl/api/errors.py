"""Map domain errors to JSON HTTP errors: 4xx for the caller's mistakes, 503 for storage.

A database that is down, restarting or dropping connections is a 503 (retry later), never
a 500: reads have already been retried briefly by the store.
"""

from __future__ import annotations

import logging

import sqlalchemy
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from optuna.exceptions import StorageInternalError

from automl.spec import SpecError
from automl.store import (
    NoBestTrialError,
    StorageError,
    StorageUnavailableError,
    StudyNotFoundError,
    StudyStateError,
    TrialNotFoundError,
    WeightsNotFoundError,
    is_transient,
)
from automl.store.faults import first_line

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
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        logger.error("storage error: %s", exc)
        return _detail(503, str(exc))

    # Database faults surface as SQLAlchemy errors, or wrapped in Optuna's; handled here
    # (not by the catch-all below, which the server would also log as a crash).
    @app.exception_handler(sqlalchemy.exc.SQLAlchemyError)
    @app.exception_handler(StorageInternalError)
    @app.exception_handler(StorageUnavailableError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):  # the database is down, restarting or dropped the connection
            logger.error("storage unavailable: %s", first_line(exc))
            return _detail(503, "storage unavailable, try again later")
        logger.exception("database error", exc_info=exc)
        return _detail(500, "internal server error")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return _detail(500, "internal server error")
