"""The CLI's side of a local store: opening it, and its errors as one-line ``CliError``s.

Light (no spec models, registries or torch), so that the commands that only read the
store's tables (``automl status``, ``automl trials``) start fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy

from automl.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CliError
from automl.cli.http_client import ClientError
from automl.config import Settings, is_proxy_url
from automl.spec_errors import SpecError
from automl.store.artifact_errors import ArtifactUnreadableError
from automl.store.faults import SCHEMA_MISSING, first_line, is_schema_missing, is_transient
from automl.store.storage import (
    StorageError,
    Store,
    has_automl_tables,
    open_store_from,
    sqlite_file,
)
from automl.store.study_reads import (
    NoBestTrialError,
    StudyNotFoundError,
    StudyStateError,
    TrialNotFoundError,
)
from automl.url_secrets import without_password


@contextmanager
def store_errors_as_cli_errors(spec_path: str | None, cut_off_hint: str = "") -> Iterator[None]:
    """Turns the store's, the spec's and the client's known errors into ``CliError``s;
    ``cut_off_hint``: what to add when the database failed under the command (one that
    changes the store: ``change_hint``)."""
    try:
        yield
    except SpecError as exc:
        # Without a spec file the errors are the command's own input (add_trials, configs).
        message = f"invalid spec {spec_path}: {exc}" if spec_path else str(exc)
        raise CliError(message, EXIT_BAD_INPUT) from None
    except NoBestTrialError as exc:  # the input is right: the study has no result yet
        raise CliError(str(exc), EXIT_FAILURE) from None
    except (StudyNotFoundError, TrialNotFoundError, StudyStateError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    except ClientError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILURE) from None
    except StorageError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_config else EXIT_FAILURE) from None
    except ArtifactUnreadableError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    except Exception as exc:
        if is_schema_missing(exc):  # tables dropped or renamed under a running command
            raise CliError(f"{SCHEMA_MISSING}: {first_line(exc)}", EXIT_FAILURE) from None
        if not is_transient(exc):
            raise
        message = f"storage unavailable: {first_line(exc)}{cut_off_hint}"
        raise CliError(message, EXIT_FAILURE) from None


def open_store(settings: Settings, *, create: bool = False) -> Store:
    """Opens the configured store (a database: a ``grpc://`` proxy serves only workers).

    Args:
        settings: Where the store is.
        create: Create the store if it is not there yet: a SQLite file, or automl's
            tables in a server database (commands that write: submit, run, serve, worker,
            keys). Without it a missing store is an error, not an empty store: a mistyped
            ``--storage`` would otherwise report no studies, and leave an empty database
            (or automl's tables in someone else's) behind.

    Raises:
        CliError: If the store is a proxy, or missing (without ``create``).
        StorageError: If the database cannot be opened.
    """
    if is_proxy_url(settings.storage):
        raise CliError(
            f"{without_password(settings.storage)} is an automl proxy, which serves workers "
            "only; point this command at the database (AUTOML_STORAGE) or the API (--url)",
            EXIT_BAD_INPUT,
        )
    if not create:
        _require_store(settings.storage)
    return open_store_from(settings)


def _require_store(url: str) -> None:
    """Raises a ``CliError`` (bad input) unless ``url`` names an existing store: a SQLite
    file that is there, or a server database holding automl's tables."""
    database = sqlite_file(url)
    if database is not None:
        if not database.exists():
            raise CliError(
                f"no store at {database}: nothing was submitted there (check --storage or "
                "AUTOML_STORAGE; submit and run create it)",
                EXIT_BAD_INPUT,
            )
        return
    if _backend(url) not in (None, "sqlite") and not has_automl_tables(url):
        raise CliError(
            f"no automl store at {without_password(url)} (no automl tables); submit a study or run "
            "automl serve/worker to create one",
            EXIT_BAD_INPUT,
        )


def _backend(url: str) -> str | None:
    """``url``'s database (``sqlite``, ``postgresql``...); None if it is malformed (which
    opening the store reports)."""
    try:
        return sqlalchemy.engine.make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return None
