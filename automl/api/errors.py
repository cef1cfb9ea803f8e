"""Map domain errors to JSON HTTP errors: 4xx for the caller's mistakes, 503 for storage.

A database that is down, restarting or dropping connections is a 503 (retry later), never
a 500: reads have already been retried briefly by the store. So is a database whose
tables are gone (dropped or renamed under the running API): ``storage schema missing``,
on every route, as ``GET /health`` says it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

import sqlalchemy
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from optuna.exceptions import StorageInternalError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from automl.spec import FieldError, SpecError
from automl.store import (
    ArtifactUnreadableError,
    NoBestTrialError,
    ProjectLimitError,
    StorageError,
    StorageUnavailableError,
    StudyNotFoundError,
    StudyStateError,
    TrialNotFoundError,
    WeightsNotFoundError,
    is_transient,
)
from automl.store.faults import (
    LOG_INTERVAL_S,
    SCHEMA_MISSING,
    first_line,
    is_read_only,
    is_schema_missing,
)

logger = logging.getLogger("automl.api")

UNAVAILABLE = "storage unavailable, try again later"
"""The body of a 503 while the database cannot be reached."""
READ_ONLY = (
    "storage unavailable: the database refuses writes as read-only (SQLite: its file's or "
    "folder's permissions, a read-only mount; PostgreSQL: a standby server); try again "
    "once it can be written"
)
"""The body of a 503 for a write that the database refused as read-only."""


class PayloadTooLargeError(ValueError):
    """The request body exceeds the configured limit."""


class ErrorDetail(BaseModel):
    """An error answer other than a 422: ``{"detail": "study 42 not found"}``."""

    detail: str


ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "No API key, or one that is unknown or revoked",
    404: "No such study, trial or weights (another project's study included)",
    409: "The study's state does not allow this",
    413: "The request is over a configured limit (AUTOML_LIMIT_*)",
    415: "Unsupported content type",
    503: "Storage unavailable; try again later",
}
"""What each error status means, for the OpenAPI document (422s keep FastAPI's own
``HTTPValidationError`` declaration: refusals use its shape, ``loc`` naming the field)."""

# FastAPI's answer to a body it cannot decode at all (not UTF-8, say): a bare 400.
_UNPARSABLE_BODY = "There was an error parsing the body"


def error_responses(
    *codes: int, descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring ``codes`` with the shared error body.

    The app's OpenAPI document defines ``ErrorDetail`` among its components.

    Args:
        codes: HTTP statuses from ``ERROR_DESCRIPTIONS``.
        descriptions: Route-specific wording for some of them.
    """
    wording = {**ERROR_DESCRIPTIONS, **(descriptions or {})}
    # JSON whatever the route's own media type (a ``model`` would take an HTML route's).
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
    return {code: {"description": wording[code], "content": content} for code in codes}


RETRY_AFTER_S = 5
"""What a 503 asks clients to wait before trying again (``Retry-After``): outages that
workers and the API ride out are mostly seconds long (a restart, a failover)."""


def _detail(status_code: int, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status_code == 503 else None
    return JSONResponse({"detail": message}, status_code=status_code, headers=headers)


def spec_error_response(exc: SpecError) -> JSONResponse:
    """422 in FastAPI's own validation-error shape, with ``loc`` under ``body``; ``type``
    is ``limit_error`` where a project's limit refused the request (wait, or cancel or
    delete a study, and send it again), else ``spec_error`` (change what was sent)."""
    kind = "limit_error" if isinstance(exc, ProjectLimitError) else "spec_error"
    detail = [
        {
            "loc": ["body", *map(_printable, error.loc)],
            "msg": _printable(error.msg),
            "type": kind,
            "path": _printable(error.path if error.loc else "body"),
        }
        for error in exc.errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """422 in FastAPI's shape, without the ``input`` FastAPI would repeat: it may be
    megabytes long, or hold what JSON cannot (NaN, a lone surrogate)."""
    detail = [
        {
            "loc": [_printable(part) for part in error.get("loc", ())],
            "msg": _printable(str(error.get("msg", "")).removeprefix("Value error, ")),
            "type": str(error.get("type", "value_error")),
            "path": _printable(_field_path(tuple(error.get("loc", ())))),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


def _field_path(loc: tuple[str | int, ...]) -> str:
    """A request field's path as specs' errors write it (``files[0]``, ``limit``): the
    ``loc`` without its place (``body``, ``query``...), or the place alone."""
    if len(loc) <= 1:
        return str(loc[0]) if loc else "body"
    return FieldError(loc[1:], "").path


def _allowed_methods(request: Request) -> list[str]:
    """The methods of every operation whose path template matches the request's path (from
    the OpenAPI document: the routing objects of included routers are FastAPI internals)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


_MAX_SHOWN = 300
"""Characters of a name or message shown in a 422; longer ones are cut."""


def _printable(value: str | int) -> str | int:
    """``value`` as text that any JSON encoder takes: lone surrogates escaped, cut short."""
    if not isinstance(value, str):
        return value
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


class OutageLog:
    """Reports a database outage once per ``interval`` seconds, with the number of requests
    it failed since the last report: an outage fails every request at once, and a line
    per request would bury the log.

    Args:
        interval: Seconds between two reports.
        what: What the report says the storage is.
    """

    def __init__(self, interval: float = LOG_INTERVAL_S, what: str = "storage unavailable") -> None:
        self.interval = interval
        self.what = what
        self._failed = 0
        self._last = -math.inf
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """Counts one request that ``exc`` failed, and reports when one is due."""
        with self._lock:
            self._failed += 1
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last, failed, self._failed = now, self._failed, 0
        logger.warning(
            "%s: %d request(s) answered 503 since the last report: %s",
            self.what,
            failed,
            first_line(exc),
        )


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers on ``app``."""

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            detail = [
                {
                    "loc": ["body"],
                    "msg": "body is not UTF-8 JSON",
                    "type": "json_invalid",
                    "path": "body",
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        if exc.status_code == 405:
            # Starlette names the methods of the first route with this path only.
            own = (exc.headers or {}).get("Allow", "")
            methods = {method.strip() for method in own.split(",") if method.strip()}
            allowed = ", ".join(sorted(methods | set(_allowed_methods(request))))
            return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

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

    outage = OutageLog()
    schema_gone = OutageLog(what=SCHEMA_MISSING)

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        if exc.transient:
            outage.failed(exc)
            return _detail(503, READ_ONLY if is_read_only(exc) else UNAVAILABLE)
        logger.warning("storage error: %s", exc)
        # Its first clause ("storage schema missing"): the driver's text names hosts and
        # ports, which the log keeps and an unauthenticated /health does not show.
        return _detail(503, str(exc).split(":", 1)[0])

    @app.exception_handler(ArtifactUnreadableError)
    async def _unreadable(_: Request, exc: ArtifactUnreadableError) -> JSONResponse:
        logger.warning("%s", exc)
        # No Retry-After: a file's permissions wait for a person, not for time.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # Database faults surface as SQLAlchemy errors, or wrapped in Optuna's; handled here
    # (not by the catch-all below, which the server would also log as a crash).
    @app.exception_handler(sqlalchemy.exc.SQLAlchemyError)
    @app.exception_handler(StorageInternalError)
    @app.exception_handler(StorageUnavailableError)
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        if is_schema_missing(exc):
            schema_gone.failed(exc)
            return _detail(503, SCHEMA_MISSING)
        if is_transient(exc):  # the database is down, restarting or dropped the connection
            outage.failed(exc)
            return _detail(503, READ_ONLY if is_read_only(exc) else UNAVAILABLE)
        logger.exception("database error", exc_info=exc)
        return _detail(500, "internal server error")

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> Response:
        # The client left while its body was read: no one reads the answer, nothing to log
        # beyond a line (a traceback per dropped upload would flood the log).
        logger.info(
            "client left before sending its whole request: %s %s", request.method, request.url.path
        )
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return _detail(500, "internal server error")
