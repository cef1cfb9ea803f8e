"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from automl import __version__
from automl.api.auth import KeyCache, authorize
from automl.api.body import BODY_MODELS
from automl.api.docs_page import docs_page
from automl.api.errors import ErrorDetail, error_responses, install_error_handlers
from automl.api.origin import SameOriginWrites
from automl.api.query import refuse_unknown_query
from automl.api.routes import health, models, predict, registries, report, studies
from automl.catalog import load_plugins
from automl.config import Limits, Settings, is_loopback
from automl.delivery.bundle import CHILD_TRACER
from automl.delivery.study_report import ReportCache
from automl.spec import StudySpec
from automl.store import Reaper, Store, open_store_from

CHECKED = [Depends(authorize), Depends(refuse_unknown_query)]
"""What every route but ``/health`` (a probe, which must answer whatever it is sent)
checks first: the key, then that every query parameter is one the route takes."""

REPORTS_AT_ONCE = 1
"""Reports an API process renders at once (each takes a core, for seconds to a minute);
the others wait their turn without holding one of the ``AUTOML_API_THREADS``."""
PREDICTIONS_AT_ONCE = 2
"""Predict requests an API process works on at once, on threads of their own: the others
wait their turn without holding one of the ``AUTOML_API_THREADS``, which every other
route (and the key check) needs. A tester's five predict requests of slow images (seconds
each to decode, within every limit) held all four for minutes, and another project's
``GET /studies/9`` took 290 s."""
ANNOTATIONS_AT_ONCE = 1
"""Annotate requests an API process works on at once (up to 10,000 images each, minutes),
on a thread of their own: they never hold up predict requests either."""


def create_app(
    settings: Settings | None = None, store: Store | None = None, *, reap: bool = True
) -> FastAPI:
    """Builds the API over the store named by ``settings``.

    While the app runs, a reaper thread re-queues trials whose workers were lost (it
    is what recovers a study when every worker died). Blocking handlers (the store's
    queries) run in a pool of ``settings.api_threads`` threads; requests beyond that wait
    their turn in order, instead of all sharing the interpreter lock at once.

    Args:
        settings: Defaults to the ``AUTOML_*`` environment.
        store: An already open store (otherwise opened from ``settings``).
        reap: Run the reaper while the app serves.
    """
    settings = settings or Settings()
    Limits()  # read per request: a bad AUTOML_LIMIT_* fails the start, not every submit
    load_plugins()
    store = store or open_store_from(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        # What was loaded so far (torch, Optuna, the app) lives as long as the process:
        # moved out of the collector's sight, it stops making every full collection a
        # pause of tens of milliseconds for the requests in flight.
        gc.collect()
        gc.freeze()
        reaper = Reaper(store, settings.grace_period, settings.reap_interval) if reap else None
        if reaper is not None:
            reaper.start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()
            # Ended with the app, not by the interpreter's exit: a server run as a
            # multiprocessing child would otherwise wait out the idle timer at exit.
            CHILD_TRACER.close()

    app = FastAPI(
        title="automl",
        version=__version__,
        summary="Hyperparameter search for image recognition on Optuna's SQL store.",
        lifespan=lifespan,
        # Any route that reads the store answers 503 while the database is unreachable.
        responses=error_responses(503),
        # operationIds (and so generated clients' methods) are the routes' names:
        # delete_study, not delete_studies__study_id__delete.
        generate_unique_id_function=lambda route: route.name,
        docs_url=None,  # FastAPI's loads unpinned, unchecked files: ``docs_page``'s instead
        redoc_url=None,
    )

    async def docs(request: Request) -> HTMLResponse:
        title = f"{app.title} - Swagger UI"
        return docs_page(request, app.openapi_url or "", title, settings.docs_assets_url)

    app.add_route("/docs", docs, include_in_schema=False)  # a plain route: GET and HEAD

    app.state.settings = settings
    app.state.store = store
    app.state.key_cache = KeyCache(store, settings.auth_cache_s)
    app.state.report_cache = ReportCache()
    app.state.report_limiter = anyio.CapacityLimiter(REPORTS_AT_ONCE)
    app.state.prediction_limiter = anyio.CapacityLimiter(PREDICTIONS_AT_ONCE)
    app.state.annotation_limiter = anyio.CapacityLimiter(ANNOTATIONS_AT_ONCE)
    install_error_handlers(app)
    app.include_router(health.router)  # the one route open without a key
    # Every other router needs a key (once keys exist) and hides other projects' studies.
    for router in (studies.router, registries.router, predict.router, models.router, report.router):
        app.include_router(router, dependencies=CHECKED, responses=error_responses(401))
    app.openapi = lambda: _openapi_with_spec_schema(app)  # type: ignore[method-assign]
    app.add_middleware(HeadAsGet)
    app.add_middleware(SameOriginWrites, loopback=is_loopback(settings.host))
    app.add_middleware(NoSniff)
    return app


class NoSniff:
    """Tells browsers to take every answer of the app as the type it declares
    (``X-Content-Type-Options: nosniff``): a weights file or a JSON error is never run as
    a script or shown as a page. (Starlette's own answer to an unhandled error, a plain
    text 500, is made outside it.)

    Args:
        app: The ASGI app it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Adds the header to every HTTP answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_header)


class HeadAsGet:
    """Answers ``HEAD`` on every ``GET`` route (FastAPI's routes take only the methods
    they declare): the ``GET`` answer's status and headers, without its body.

    Args:
        app: The ASGI app it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs ``HEAD`` requests as ``GET`` and drops what the body would have been."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _openapi_with_spec_schema(app: FastAPI) -> dict[str, Any]:
    """OpenAPI document that also defines ``StudySpec`` (the raw-body request schema), the
    bodies routes read with ``json_body`` and ``ErrorDetail`` (the error body, which
    ``error_responses`` declares by reference)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        spec_schema = StudySpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec_schema.pop("$defs", {}))
        components["StudySpec"] = spec_schema
        components["ErrorDetail"] = ErrorDetail.model_json_schema()
        _describe_validation_errors(components)
        if not app.state.settings.keys_required:
            _key_optional_until_one_exists(schema)
        for name, model in BODY_MODELS.items():
            body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body_schema.pop("$defs", {}))
            components[name] = body_schema
        app.openapi_schema = schema
    return app.openapi_schema


def _key_optional_until_one_exists(schema: dict[str, Any]) -> None:
    """Lets every operation go without a key as well (``{}`` among its requirements), on a
    server that is open while no key exists (not one that requires keys): a client
    generated from the document should not insist on one (a tester's schema checker
    counted every keyless answer a failure)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security")
            if security and {} not in security:
                security.append({})


def _describe_validation_errors(components: dict[str, Any]) -> None:
    """Declares what every 422 item carries beside FastAPI's ``loc``, ``msg`` and
    ``type``: the field ``path`` as users write it (``params.lr.low``), and the ``type``
    that tells a project's limit from an error in what was sent."""
    item = components.get("ValidationError")
    if item is None:  # no route declares a 422
        return
    item["properties"]["path"] = {
        "type": "string",
        "title": "Path",
        "description": "The field as a spec or request names it: params.lr.low, "
        "budget.n_trials, files[1]; body for the whole body.",
    }
    item["required"] = [*item.get("required", []), "path"]
    item["properties"]["type"]["description"] = (
        "limit_error: a project's limit refused the request (send it again later); "
        "spec_error: the spec or body is wrong; otherwise pydantic's error type."
    )
