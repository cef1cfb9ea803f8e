"""Artifacts that the trials of many studies share (the ``gan`` strategy's generators).

A worker keeps each under ``shared_artifact_id(key)`` and the trials that used one name
its key in their notes (``SHARED_ARTIFACTS_NOTE``); deleting a study removes the shared
artifacts its trials used that no other study's trial names. A trial of another study
that read one but has not recorded its notes yet does not keep it: a machine without a
local copy makes it again (the same bytes, once more training time).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import sqlalchemy as sa

from automl.store import attrs, optuna_rows
from automl.store.artifacts import remove_quietly
from automl.store.storage import Store

logger = logging.getLogger("automl.store")

SHARED_ARTIFACTS_NOTE = "shared_artifacts"
"""The key of a trial's notes that lists the shared artifacts (their keys) it used."""


def shared_artifact_id(key: str) -> str:
    """The artifact id of the shared artifact ``key`` (``gan-<data>-<seed>-<steps>``)."""
    return f"shared-{key}"


def shared_keys_of(connection: sa.engine.Connection, study_id: int) -> set[str]:
    """The keys of the shared artifacts the study's trials used (one query)."""
    notes = optuna_rows.trial_attr_values(connection, study_id, attrs.NOTES)
    return {
        key
        for note in notes
        if isinstance(note, dict)
        for key in note.get(SHARED_ARTIFACTS_NOTE) or ()
        if isinstance(key, str)
    }


def remove_unused_shared(store: Store, keys: Iterable[str]) -> list[str]:
    """Removes the shared artifacts among ``keys`` that no trial's notes name any more.

    Best effort, after the study that used them is gone: a failure leaves them (a
    warning), never the deletion undone.

    Returns:
        The keys removed.
    """
    removed = []
    for key in sorted(keys):
        try:
            with store.read() as connection:
                used = optuna_rows.any_trial_attr_mentions(connection, attrs.NOTES, json.dumps(key))
            if not used:
                remove_quietly(store.artifacts, shared_artifact_id(key))
                removed.append(key)
        except Exception as exc:  # the study is deleted already: this is housekeeping
            logger.warning("shared artifact %s left behind: %s", shared_artifact_id(key), exc)
    return removed


__all__ = [
    "SHARED_ARTIFACTS_NOTE",
    "remove_unused_shared",
    "shared_artifact_id",
    "shared_keys_of",
]
