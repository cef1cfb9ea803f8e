"""``automl dashboard``: optuna-dashboard on automl's storage and artifact store.

optuna-dashboard reads the studies and trials from the same Optuna tables the API and
the workers write, and the trials' artifacts (weights, model cards) through the same
artifact store: automl's folder, SQL and S3 stores all implement Optuna's artifact-store
protocol (``open_reader``, ``write``, ``remove``), so the SQL store used with PostgreSQL
serves the dashboard as it serves the workers.

A few dashboard actions would change what automl keeps in its own tables too; on automl's
studies the dashboard refuses them (HTTP 403 with the command to use instead): deleting
or renaming a study, telling a trial's result by hand, which would end a trial a worker
runs, and deleting an artifact (optuna-dashboard removes the file, then fails to update
the finished trial, so automl would point at weights that are gone). Studies created in
the dashboard itself (or with plain Optuna) are not automl's, and all of it is allowed
on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from automl.cli.errors import EXIT_BAD_INPUT, CliError
from automl.cli.ports import bind_problem, require_free_port
from automl.cli.stops import StopSignals
from automl.config import Settings, is_loopback

if TYPE_CHECKING:
    from automl.store import Store

logger = logging.getLogger("automl.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# (method, path pattern, reason): the pattern's group is a study id, or a trial id where
# the group is named ``trial``.
_REFUSED: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "DELETE",
        re.compile(r"/api/studies/(\d+)"),
        "delete automl studies with `automl delete ID` (or DELETE /studies/{id}), which "
        "also removes automl's records and the study's artifacts",
    ),
    (
        "POST",
        re.compile(r"/api/studies/(\d+)/rename"),
        "automl studies keep their names",
    ),
    (
        "POST",
        re.compile(r"/api/trials/(?P<trial>\d+)/tell"),
        "automl's workers report trial results; cancel the study with `automl cancel ID`",
    ),
    (
        "DELETE",
        re.compile(r"/api/artifacts/(\d+)(?:/\d+)?/[0-9a-fA-F-]+"),
        "automl removes trials' weights itself (the spec's keep_weights) and every artifact "
        "with the study (`automl delete ID`)",
    ),
)


def dashboard_app(store: Store) -> WSGIApp:
    """optuna-dashboard as a WSGI app on ``store``'s storage and artifact store, refusing
    the actions listed in the module docstring.

    Args:
        store: An open store.
    """
    import optuna_dashboard

    app = optuna_dashboard.wsgi(store.storage, artifact_store=store.artifacts)
    return _refuse_automl_changes(app, lambda match: _is_automl_study(store, match))


def _is_automl_study(store: Store, match: re.Match[str]) -> bool:
    """Whether the study that ``match`` (of a ``_REFUSED`` pattern) names is automl's.

    A trial's study is read from Optuna's table: Optuna 5's storage API has no such call.
    """
    import sqlalchemy as sa

    from automl.store import optuna_rows, tables

    trials, studies = optuna_rows.trials, tables.studies
    if match.groupdict().get("trial") is None:
        study_id: Any = int(match[1])
    else:
        study_id = (
            sa.select(trials.c.study_id)
            .where(trials.c.trial_id == int(match["trial"]))
            .scalar_subquery()
        )
    with store.read() as connection:
        return connection.scalar(sa.select(sa.exists().where(studies.c.study_id == study_id)))


def _refuse_automl_changes(
    app: WSGIApp, is_automl_study: Callable[[re.Match[str]], bool]
) -> WSGIApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "").rstrip("/")
        for refused_method, pattern, reason in _REFUSED:
            if (
                method == refused_method
                and (match := pattern.fullmatch(path))
                and is_automl_study(match)
            ):
                body = json.dumps({"reason": reason}).encode()
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
        return app(environ, start_response)

    return guarded


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow artifact download does not block the page."""

    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """Serves optuna-dashboard on the configured store until SIGINT (exit 130) or SIGTERM
    (0)."""
    from automl.proxy import is_proxy_url
    from automl.store import open_store_from
    from automl.store.storage import redact

    if is_proxy_url(settings.storage):
        raise CliError(
            f"{settings.storage} is an automl proxy, which serves workers only; point "
            "the dashboard at the database (AUTOML_STORAGE)",
            EXIT_BAD_INPUT,
        )
    host = args.dashboard_host or DEFAULT_HOST
    port = args.dashboard_port or DEFAULT_PORT
    require_free_port(host, port)  # before the store is opened (or created)
    store = open_store_from(settings)
    try:
        try:
            server = make_server(
                host,
                port,
                dashboard_app(store),
                server_class=_ThreadingServer,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {bind_problem(exc)}") from None
        if not is_loopback(host):
            logger.warning(
                "optuna-dashboard on %s has no authentication: anyone who reaches port %d "
                "sees every project's studies and can change them (serve it on 127.0.0.1, "
                "or put it behind an authenticating proxy)",
                host,
                server.server_port,
            )
        try:
            with StopSignals(_stop) as stops:
                print(
                    f"optuna-dashboard on http://{host}:{server.server_port} "
                    f"(storage {redact(store.url)}, artifacts: {type(store.artifacts).__name__})",
                    file=sys.stderr,
                    flush=True,
                )
                server.serve_forever()
        except _Stopped:
            pass
        finally:
            server.server_close()
    finally:
        store.close()
    return stops.exit_code


class _Stopped(Exception):
    """SIGINT or SIGTERM: stop serving (``automl up`` stops its children with SIGTERM)."""


def _stop(_: int) -> None:
    raise _Stopped


__all__ = ["DEFAULT_PORT", "cmd_dashboard", "dashboard_app"]
