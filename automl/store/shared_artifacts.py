"""Artifacts that the trials of many studies share (the ``gan`` strategy's generators).

A worker keeps each under ``shared_artifact_id(key)``. Before a trial uses one, its study
records the use (the system attribute ``shared_use_attr(key)``: kept by a trial that
fails, is cancelled or whose worker dies too); deleting a study first removes the shared
artifacts it used that no other study records. A study that starts using one after that
check, or whose record failed (a warning), makes it again on a machine without a local
copy: the same bytes, once more training time. A worker whose record failed keeps what
it makes on its machine only (recorded by no study, a shared copy would stay for good).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from automl.store import optuna_rows, tables
from automl.store.artifacts import remove_quietly
from automl.store.storage import Store

SHARED_USE_PREFIX = "automl:shared:"
"""The prefix of the study system attributes that record the shared artifacts it used."""


def shared_artifact_id(key: str) -> str:
    """The artifact id of the shared artifact ``key`` (``gan-<data>-<seed>-<steps>``)."""
    return f"shared-{key}"


def shared_use_attr(key: str) -> str:
    """The study system attribute that records a use of the shared artifact ``key``."""
    return SHARED_USE_PREFIX + key


def shared_keys_of(connection: sa.engine.Connection, study_id: int) -> set[str]:
    """The keys of the shared artifacts the study recorded using."""
    attrs = optuna_rows.study_system_attr_keys(connection, study_id, SHARED_USE_PREFIX)
    return {attr.removeprefix(SHARED_USE_PREFIX) for attr in attrs}


def remove_unshared(store: Store, study_id: int, keys: Iterable[str] | None = None) -> set[str]:
    """Removes the shared artifacts the study used (``keys``, or all it recorded) that no
    other study records using, but for studies being deleted too (two deletions at once
    would otherwise each keep them for the other).

    Returns:
        The keys looked at (removed or kept).
    """
    deleting = sa.select(tables.studies.c.study_id).where(
        tables.studies.c.status == tables.DELETING
    )
    with store.read() as connection:
        looked = set(keys) if keys is not None else shared_keys_of(connection, study_id)
        alone = [
            key
            for key in sorted(looked)
            if not optuna_rows.other_study_has_system_attr(
                connection, study_id, shared_use_attr(key), ignore=deleting
            )
        ]
    for key in alone:
        remove_quietly(store.artifacts, shared_artifact_id(key))
    return looked


__all__ = [
    "SHARED_USE_PREFIX",
    "remove_unshared",
    "shared_artifact_id",
    "shared_keys_of",
    "shared_use_attr",
]
