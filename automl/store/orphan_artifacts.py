"""Artifacts that nothing refers to: written by a process killed before it recorded them.

A worker writes a trial's weights, model card or checkpoint, then records its id (on the
trial, on the ticket). Killed in between (``kill -9``, a spot machine taken back), it
leaves an artifact that no trial, ticket, refit or study names, and that no deletion will
ever find. ``remove_orphan_artifacts`` removes those older than ``ORPHAN_ARTIFACT_AGE_S``
(a write is recorded within seconds) from the SQL artifact store: its artifacts live in
the database they belong to (the default with PostgreSQL, where fleets of workers come and
go). A folder is left as it is: several stores may share one (``automl-artifacts`` in the
folder of two SQLite files), so a file this database does not name may be another's; so
is an S3 bucket.

What refers to an artifact:

- an ``artifacts:ID`` system attribute of a trial or a study (Optuna's ``upload_artifact``:
  weights, model cards, optuna-dashboard's uploads; older optuna-dashboards recorded a
  trial's as ``dashboard:artifacts:TRIAL:ID`` on its study);
- a trial's ``automl.weights`` attribute;
- a ticket's checkpoint, a refit's weights and card;
- a study's record of a shared artifact it used (``automl.store.shared_artifacts``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import sqlalchemy as sa
from optuna.artifacts.exceptions import ArtifactNotFound

from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import SqlArtifactStore
from automl.store.faults import is_transient
from automl.store.retention import OPTUNA_ARTIFACT_ATTR
from automl.store.shared_artifacts import SHARED_USE_PREFIX, shared_artifact_id
from automl.store.storage import Store

logger = logging.getLogger("automl.reaper")

ORPHAN_ARTIFACT_AGE_S = 24 * 3600.0
"""An artifact nothing refers to is removed once it is this old: a live writer records its
artifact within seconds of writing it, and a day leaves room for any clock between."""

LEGACY_DASHBOARD_PREFIX = "dashboard:artifacts:"
"""Older optuna-dashboard versions recorded a trial's uploads on its study, as
``dashboard:artifacts:TRIAL_ID:ARTIFACT_ID`` (today's read them still)."""


def referenced_artifacts(connection: sa.engine.Connection) -> set[str]:
    """The ids of every artifact something in the store refers to (one query per kind)."""
    ids: set[str] = set()
    for table in (optuna_rows.trial_system_attributes, optuna_rows.study_system_attributes):
        ids.update(_suffixes(connection, table.c.key, OPTUNA_ARTIFACT_ATTR))
    legacy = _suffixes(
        connection, optuna_rows.study_system_attributes.c.key, LEGACY_DASHBOARD_PREFIX
    )
    ids.update(key.partition(":")[2] for key in legacy)
    shared = _suffixes(connection, optuna_rows.study_system_attributes.c.key, SHARED_USE_PREFIX)
    ids.update(shared_artifact_id(key) for key in shared)
    user = optuna_rows.trial_user_attributes
    weights_values = sa.select(user.c.value_json).where(user.c.key == attrs.WEIGHTS)
    for value in connection.scalars(weights_values):
        weights = json.loads(value)
        if isinstance(weights, str):
            ids.add(weights)
    ids.update(_named(connection, tables.tickets.c.checkpoint))
    ids.update(_named(connection, tables.refits.c.weights))
    ids.update(_named(connection, tables.refits.c.card))
    return ids


def _suffixes(
    connection: sa.engine.Connection, column: sa.ColumnElement[str], prefix: str
) -> list[str]:
    """What follows ``prefix`` in the values of ``column`` that start with it."""
    # autoescape: "_" in a prefix is no LIKE wildcard.
    query = sa.select(column).where(column.startswith(prefix, autoescape=True))
    return [value[len(prefix) :] for value in connection.scalars(query)]


def _named(connection: sa.engine.Connection, column: sa.Column[str]) -> Iterable[str]:
    return connection.scalars(sa.select(column).where(column.is_not(None)))


def remove_orphan_artifacts(store: Store, min_age_s: float = ORPHAN_ARTIFACT_AGE_S) -> list[str]:
    """Removes the artifacts older than ``min_age_s`` that nothing refers to, from the SQL
    artifact store (other stores are left as they are).

    The candidates are listed before the references are read: an artifact written and
    recorded in between is not among them. An artifact that cannot be removed is logged
    and left for the next sweep.

    Returns:
        The ids removed.
    """
    artifacts = store.artifacts
    if not isinstance(artifacts, SqlArtifactStore):
        return []
    candidates = artifacts.ids_older_than(min_age_s)
    if not candidates:
        return []
    with store.read() as connection:
        referenced = referenced_artifacts(connection)
    removed = []
    for artifact_id in sorted(set(candidates) - referenced):
        try:
            artifacts.remove(artifact_id)
        except ArtifactNotFound:
            continue  # another sweep was first
        except Exception as exc:
            if is_transient(exc):
                raise
            logger.warning("could not remove unreferenced artifact %s: %s", artifact_id, exc)
            continue
        removed.append(artifact_id)
    if removed:
        logger.info(
            "removed %d artifacts that nothing refers to (writes of killed processes)",
            len(removed),
        )
    return removed


__all__ = ["ORPHAN_ARTIFACT_AGE_S", "referenced_artifacts", "remove_orphan_artifacts"]
