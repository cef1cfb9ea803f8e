"""Artifacts that nothing refers to: written by a process killed before it recorded them.

A worker writes a trial's weights, model card or checkpoint, then records its id (on the
trial, on the ticket). Killed in between (``kill -9``, a spot machine taken back), it
leaves an artifact that no trial, ticket, refit or study names, and that no deletion will
ever find. ``remove_orphan_artifacts`` removes those older than ``ORPHAN_ARTIFACT_AGE_S``
(a write is recorded within seconds): in a folder store or the SQL store, which can list
what they hold; an S3 bucket is left as it is.

What refers to an artifact:

- an ``artifacts:ID`` system attribute of a trial or a study (Optuna's ``upload_artifact``:
  weights, model cards, optuna-dashboard's uploads);
- a trial's ``automl.weights`` attribute;
- a ticket's checkpoint, a refit's weights and card;
- a study's record of a shared artifact it used (``automl.store.shared_artifacts``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import sqlalchemy as sa

from automl.store import attrs, optuna_rows, tables
from automl.store.artifacts import FolderArtifactStore, SqlArtifactStore, remove_quietly
from automl.store.shared_artifacts import SHARED_USE_PREFIX, shared_artifact_id
from automl.store.storage import Store

logger = logging.getLogger("automl.reaper")

ORPHAN_ARTIFACT_AGE_S = 24 * 3600.0
"""An artifact nothing refers to is removed once it is this old: a live writer records its
artifact within seconds of writing it, and a day leaves room for any clock between."""

UPLOAD_PREFIX = "artifacts:"
"""Optuna's ``upload_artifact`` records an artifact as the system attribute of this prefix
and its id, on the trial or study it was uploaded to."""


def referenced_artifacts(connection: sa.engine.Connection) -> set[str]:
    """The ids of every artifact something in the store refers to (one query per kind)."""
    ids: set[str] = set()
    for table in (optuna_rows.trial_system_attributes, optuna_rows.study_system_attributes):
        ids.update(_suffixes(connection, table.c.key, UPLOAD_PREFIX))
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
    """Removes the artifacts older than ``min_age_s`` that nothing refers to.

    The candidates are listed before the references are read: an artifact written and
    recorded in between is not among them.

    Returns:
        The ids removed (none from a store that cannot list what it holds).
    """
    artifacts = store.artifacts
    if not isinstance(artifacts, FolderArtifactStore | SqlArtifactStore):
        return []
    candidates = artifacts.ids_older_than(min_age_s)
    if not candidates:
        return []
    with store.read() as connection:
        referenced = referenced_artifacts(connection)
    orphans = sorted(set(candidates) - referenced)
    for artifact_id in orphans:
        remove_quietly(artifacts, artifact_id)
    if orphans:
        logger.info(
            "removed %d artifacts that nothing refers to (writes of killed processes)",
            len(orphans),
        )
    return orphans


__all__ = ["ORPHAN_ARTIFACT_AGE_S", "referenced_artifacts", "remove_orphan_artifacts"]
