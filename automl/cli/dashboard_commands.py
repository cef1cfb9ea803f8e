"""``automl dashboard``: optuna-dashboard on automl's storage and artifact store.

optuna-dashboard reads the studies and trials from the same Optuna tables the API and
the workers write, and the trials' artifacts (weights, model cards) through the same
artifact store: automl's folder, SQL and S3 stores all implement Optuna's artifact-store
protocol (``open_reader``, ``write``, ``remove``), so the SQL store used with PostgreSQL
serves the dashboard as it serves the workers.

A few dashboard actions would change what automl keeps about its own studies; on automl's
studies and their trials the dashboard refuses them (HTTP 403 with a reason, and the
command to use instead where there is one): deleting or renaming a study, telling a
trial's result or writing its user attributes by hand (a worker owns a running trial, and
``automl.*`` attributes are automl's records), recording a preference (optuna-dashboard
completes the study's unfinished trials with made-up values), and uploading or deleting an
artifact (retention and ``automl delete`` keep track of automl's files; optuna-dashboard
removes a file, then fails to update the finished trial, so automl would point at weights
that are gone). On any study an artifact is deleted only through the study or trial that
records it: optuna-dashboard removes whatever artifact id it is given before it looks at
the study or trial in the URL. Notes and the preference pages' settings stay allowed
everywhere. Studies created in the dashboard itself (or with plain
Optuna) are not automl's, and all of it is allowed on them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from automl.cli.dashboard_origin import WSGIApp, allowed_host_names, json_answer, same_site_only
from automl.cli.errors import EXIT_BAD_INPUT, CliError
from automl.cli.ports import bind_problem, require_free_port
from automl.cli.stops import StopSignals
from automl.config import Settings, is_loopback, is_proxy_url
from automl.url_secrets import without_password

if TYPE_CHECKING:
    from automl.store import Store

logger = logging.getLogger("automl.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

_DELETE_STUDY = (
    "delete automl studies with `automl delete ID` (or DELETE /studies/{id}), which also "
    "removes automl's records and the study's artifacts"
)
_TRIAL_RESULTS = "automl's workers report trial results; cancel the study with `automl cancel ID`"
_TRIAL_ATTRS = (
    "automl's workers write the attributes of automl's trials (its automl.* records among "
    "them); keep remarks in the trial's note"
)
_PREFERENCE = (
    "a preference completes the study's unfinished trials with made-up values; automl's "
    "workers report its trials' results"
)
_UPLOAD = (
    "automl's studies and trials hold only the artifacts automl saves (`automl delete ID` "
    "would leave an uploaded file behind); upload to a study created in the dashboard"
)
_DELETE_ARTIFACT = (
    "automl removes trials' weights itself (the spec's keep_weights) and every artifact "
    "with the study (`automl delete ID`)"
)
_DASHBOARD_ARTIFACT_ATTR = "dashboard:artifacts:"
"""Prefix, before ``{trial id}:{artifact id}``, of the study system attribute where older
optuna-dashboard releases recorded a trial's upload (0.21.0 still lists and deletes them)."""

# What optuna-dashboard's router (bottle) matches for an ``int`` and an artifact id.
_STUDY, _TRIAL = r"(?P<study>-?\d+)", r"(?P<trial>-?\d+)"
_ARTIFACT = r"(?P<artifact>[0-9a-fA-F-]+)"

_Check = Callable[["Store", re.Match[str]], str | None]


def _refuse_on_automl_study(reason: str) -> _Check:
    """A check that refuses with ``reason`` where the URL's study is automl's."""

    def check(store: Store, match: re.Match[str]) -> str | None:
        return reason if _is_automl_study(store, int(match["study"])) else None

    return check


def _refuse_on_automl_trial(reason: str) -> _Check:
    """A check that refuses with ``reason`` where the URL's trial is one of automl's."""

    def check(store: Store, match: re.Match[str]) -> str | None:
        owner = _trial_study(store, int(match["trial"]))
        return reason if owner is not None and owner.is_automl else None

    return check


def _refuse_trial_upload(store: Store, match: re.Match[str]) -> str | None:
    # optuna-dashboard records the upload on the trial whatever study the URL names.
    owner = _trial_study(store, int(match["trial"]))
    if _is_automl_study(store, int(match["study"])) or (owner is not None and owner.is_automl):
        return _UPLOAD
    return None


def _refuse_study_artifact_deletion(store: Store, match: re.Match[str]) -> str | None:
    from automl.store.retention import OPTUNA_ARTIFACT_ATTR

    study_id, artifact_id = int(match["study"]), match["artifact"]
    if _is_automl_study(store, study_id):
        return _DELETE_ARTIFACT
    key = OPTUNA_ARTIFACT_ATTR + artifact_id
    if not _is_record(_system_attrs(store.reader.get_study_system_attrs, study_id).get(key)):
        return f"artifact {artifact_id} is not one of study {study_id}'s artifacts"
    return None


def _refuse_trial_artifact_deletion(store: Store, match: re.Match[str]) -> str | None:
    from automl.store.retention import OPTUNA_ARTIFACT_ATTR

    study_id, trial_id, artifact_id = int(match["study"]), int(match["trial"]), match["artifact"]
    if _is_automl_study(store, study_id):
        return _DELETE_ARTIFACT
    owner = _trial_study(store, trial_id)
    if owner is not None and owner.is_automl:
        return f"trial {trial_id} is a trial of automl's study {owner.study_id}: {_DELETE_ARTIFACT}"
    if owner is None or owner.study_id != study_id:
        return f"trial {trial_id} is not a trial of study {study_id}"
    trial_attrs = _system_attrs(store.reader.get_trial_system_attrs, trial_id)
    study_attrs = _system_attrs(store.reader.get_study_system_attrs, study_id)
    if not (
        _is_record(trial_attrs.get(OPTUNA_ARTIFACT_ATTR + artifact_id))
        or _is_record(study_attrs.get(f"{_DASHBOARD_ARTIFACT_ATTR}{trial_id}:{artifact_id}"))
    ):
        return f"artifact {artifact_id} is not one of trial {trial_id}'s artifacts"
    return None


# Every route of optuna-dashboard 0.21.0 that changes something automl relies on for its
# studies, with the check that refuses it. A check returns why it refuses, or None.
_GUARDED: tuple[tuple[str, re.Pattern[str], _Check], ...] = (
    ("DELETE", re.compile(rf"/api/studies/{_STUDY}"), _refuse_on_automl_study(_DELETE_STUDY)),
    (
        "POST",
        re.compile(rf"/api/studies/{_STUDY}/rename"),
        _refuse_on_automl_study("automl studies keep their names"),
    ),
    (
        "POST",
        re.compile(rf"/api/studies/{_STUDY}/preference"),
        _refuse_on_automl_study(_PREFERENCE),
    ),
    ("POST", re.compile(rf"/api/trials/{_TRIAL}/tell"), _refuse_on_automl_trial(_TRIAL_RESULTS)),
    (
        "POST",
        re.compile(rf"/api/trials/{_TRIAL}/user-attrs"),
        _refuse_on_automl_trial(_TRIAL_ATTRS),
    ),
    ("POST", re.compile(rf"/api/artifacts/{_STUDY}"), _refuse_on_automl_study(_UPLOAD)),
    ("POST", re.compile(rf"/api/artifacts/{_STUDY}/{_TRIAL}"), _refuse_trial_upload),
    (
        "DELETE",
        re.compile(rf"/api/artifacts/{_STUDY}/{_ARTIFACT}"),
        _refuse_study_artifact_deletion,
    ),
    (
        "DELETE",
        re.compile(rf"/api/artifacts/{_STUDY}/{_TRIAL}/{_ARTIFACT}"),
        _refuse_trial_artifact_deletion,
    ),
)


def dashboard_app(store: Store, allowed_hosts: frozenset[str] | None = None) -> WSGIApp:
    """optuna-dashboard as a WSGI app on ``store``'s storage and artifact store, refusing
    the actions listed in the module docstring, writes from pages of other origins, and
    requests under other host names than ``allowed_hosts`` (``dashboard_origin``).

    Args:
        store: An open store.
        allowed_hosts: The host names it answers under besides loopback ones; None: any.
    """
    import optuna_dashboard

    app = optuna_dashboard.wsgi(store.storage, artifact_store=store.artifacts)
    guarded = _refuse_automl_changes(
        app,
        lambda method, path: _refusal(store, method, path),
        lambda path: _missing(store, path),
    )
    return same_site_only(guarded, allowed_hosts)


def _refusal(store: Store, method: str, path: str) -> str | None:
    """Why the dashboard refuses ``method`` on ``path`` (as its router reads them), or None
    if it does not."""
    for guarded_method, pattern, check in _GUARDED:
        if method == guarded_method and (match := pattern.fullmatch(path)):
            return check(store, match)
    return None


_STUDY_PATH = re.compile(rf"/(?:api/studies|api/artifacts|artifacts)/{_STUDY}(?:/.*)?")
_TRIAL_PATH = re.compile(rf"/api/trials/{_TRIAL}(?:/.*)?")
_TRIAL_ARTIFACT_PATH = re.compile(rf"/(?:api/)?artifacts/{_STUDY}/{_TRIAL}(?:/{_ARTIFACT})?")


def _missing(store: Store, path: str) -> str | None:
    """That the study or trial ``path`` names is not there, or None. optuna-dashboard
    answers 500 with a traceback in its log to a link of a deleted study's artifact, and
    to a note, tell or rename of a study or trial that is gone."""
    from automl.store import optuna_rows

    trial = _TRIAL_ARTIFACT_PATH.fullmatch(path) or _TRIAL_PATH.fullmatch(path)
    if trial is not None and _trial_study(store, int(trial["trial"])) is None:
        return f"no trial {trial['trial']} (deleted?)"
    if match := _STUDY_PATH.fullmatch(path):
        with store.read() as connection:
            there = optuna_rows.study_exists(connection, int(match["study"]))
        return None if there else f"no study {match['study']} (deleted?)"
    return None


def _is_automl_study(store: Store, study_id: int) -> bool:
    """Whether the study is automl's (one of automl's records names it)."""
    import sqlalchemy as sa

    from automl.store import tables

    studies = tables.studies
    with store.read() as connection:
        return connection.scalar(sa.select(sa.exists().where(studies.c.study_id == study_id)))


class _TrialStudy(NamedTuple):
    """The study a trial belongs to."""

    study_id: int
    is_automl: bool


def _trial_study(store: Store, trial_id: int) -> _TrialStudy | None:
    """The study of the trial; None without such a trial.

    Read from Optuna's table: Optuna 5's storage API has no call for a trial's study.
    """
    import sqlalchemy as sa

    from automl.store import optuna_rows, tables

    trials, studies = optuna_rows.trials, tables.studies
    query = (
        sa.select(trials.c.study_id, studies.c.study_id.is_not(None))
        .select_from(trials.outerjoin(studies, studies.c.study_id == trials.c.study_id))
        .where(trials.c.trial_id == trial_id)
    )
    with store.read() as connection:
        row = connection.execute(query).first()
    return None if row is None else _TrialStudy(row[0], bool(row[1]))


def _system_attrs(read: Callable[[int], dict[str, Any]], owner_id: int) -> dict[str, Any]:
    """``read(owner_id)`` (a study's or a trial's system attributes), empty without such a
    study or trial."""
    try:
        return read(owner_id)
    except KeyError:
        return {}


def _is_record(value: Any) -> bool:
    """Whether a system attribute's value records an artifact: a JSON object, as
    ``optuna.artifacts.upload_artifact`` and optuna-dashboard write it; optuna-dashboard
    marks a deleted artifact's record ``"null"``."""
    try:
        return isinstance(value, str) and isinstance(json.loads(value), dict)
    except ValueError:
        return False


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _routed_path(environ: dict[str, Any]) -> str:
    """The request's path as optuna-dashboard routes it: bottle decodes ``PATH_INFO`` as
    UTF-8, dropping what does not decode, then optuna-dashboard strips trailing slashes."""
    path = environ.get("PATH_INFO", "")
    # A path that is not latin-1 fails in bottle before it is routed.
    with contextlib.suppress(UnicodeEncodeError):
        path = path.encode("latin-1").decode("utf-8", "ignore")
    return path.rstrip("/")


def _refuse_automl_changes(
    app: WSGIApp,
    refusal: Callable[[str, str], str | None],
    missing: Callable[[str], str | None] = lambda path: None,
) -> WSGIApp:
    """``app`` answering 404 where ``missing(path)`` names a study or trial that is not
    there, and 403 with the reason where ``refusal(method, path)`` gives one."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # bottle routes a method whatever its case.
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = _routed_path(environ)
        if _CONTROL_CHARACTER.search(path):
            # bottle's routes end in ``$``, which also matches before a final newline:
            # ``/api/studies/1%0A`` would reach the route while the guard's patterns,
            # matched whole, would not. No page or call of the dashboard has them.
            status, reason = "400 Bad Request", "control characters in the path"
        elif (gone := missing(path)) is not None:
            status, reason = "404 Not Found", gone
        else:
            status, reason = "403 Forbidden", refusal(method, path)
        if reason is None:
            return app(environ, start_response)
        return json_answer(start_response, status, reason)

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
    from automl.store import open_store_from

    if is_proxy_url(settings.storage):
        raise CliError(
            f"{without_password(settings.storage)} is an automl proxy, which serves workers "
            "only; point the dashboard at the database (AUTOML_STORAGE)",
            EXIT_BAD_INPUT,
        )
    host = args.dashboard_host or DEFAULT_HOST
    port = args.dashboard_port or DEFAULT_PORT
    try:
        allowed_hosts = allowed_host_names(args.allowed_hosts, host)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    require_free_port(host, port)  # before the store is opened (or created)
    store = open_store_from(settings)
    try:
        try:
            server = make_server(
                host,
                port,
                dashboard_app(store, allowed_hosts),
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
                artifacts = type(store.artifacts).__name__
                print(
                    f"optuna-dashboard on http://{host}:{server.server_port} "
                    f"(storage {without_password(store.url)}, artifacts: {artifacts})",
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
