"""Artifacts that the trials of many studies share (the ``gan`` strategy's generators).

A worker keeps each under ``shared_artifact_id(key)``. Before a trial uses one, its study
records the use (the system attribute ``shared_use_attr(key)``: kept by a trial that
fails, is cancelled or whose worker dies too); deleting a study first removes the shared
artifacts it used that no other study records. A study that starts using one after that
check, or whose record failed (a warning), makes it again on a machine without a local
copy: the same bytes, once more training time.
"""

from __future__ import annotations

from automl.store import optuna_rows
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


def remove_unshared(store: Store, study_id: int) -> list[str]:
    """Removes the shared artifacts the study used that no other study records using.

    Returns:
        Their keys.
    """
    with store.read() as connection:
        attrs = optuna_rows.study_system_attr_keys(connection, study_id, SHARED_USE_PREFIX)
        alone = [
            attr.removeprefix(SHARED_USE_PREFIX)
            for attr in sorted(attrs)
            if not optuna_rows.other_study_has_system_attr(connection, study_id, attr)
        ]
    for key in alone:
        remove_quietly(store.artifacts, shared_artifact_id(key))
    return alone


__all__ = [
    "SHARED_USE_PREFIX",
    "remove_unshared",
    "shared_artifact_id",
    "shared_use_attr",
]
