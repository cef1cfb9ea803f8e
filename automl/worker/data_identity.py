"""Every trial of a study, and every score of its weights, sees the same data.

A dataset's fingerprint identifies its exact files and splits. Submitting a study records
it in the study's ``automl.dataset_fingerprint`` attribute; a trial that finds other data
(files added, removed, renamed or changed since) fails at once instead of being compared
with trials that saw different images. Scoring a trial's weights on the test split, or
refitting its configuration, compares the fingerprint the trial recorded
(``automl.input``): class indices and splits follow the files, so other data gives wrong
labels or test images the model trained on.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from automl.data import ImageData
from automl.store import attrs

SHOWN_DIGITS = 12
"""Fingerprint digits a message shows."""


class DataChangedError(Exception):
    """The data is not what a study's trials (or one trial) saw."""


def require_study_data(study: optuna.Study, data: ImageData, source: str) -> None:
    """Checks ``data`` against the fingerprint the study recorded when it was submitted.

    A study submitted before the record, or whose data could not be listed then, has
    none and passes. Only reads: a worker behind the proxy writes no study attribute.

    Args:
        study: The trial's study.
        data: The dataset as the trial loaded it.
        source: The dataset's registered name, for the message.

    Raises:
        DataChangedError: If the data changed since the study was submitted.
    """
    recorded = study.user_attrs.get(attrs.DATASET_FINGERPRINT)
    if recorded is not None and recorded != data.fingerprint:
        raise DataChangedError(
            f"dataset {source!r} changed since the study was submitted "
            f"({_digits(recorded)} then, {_digits(data.fingerprint)} now): trials of one study "
            "must see the same images; restore the files, or submit a new study on the "
            "data as it is now (warm_start can reuse this study's configurations)"
        )


def require_trained_data(trial: FrozenTrial, data: ImageData, source: str, doing: str) -> None:
    """Checks that ``data`` is the data ``trial`` trained on, by its recorded fingerprint.

    A trial from before ``automl.input`` recorded none and passes.

    Args:
        trial: The trained trial.
        data: The dataset as loaded now.
        source: The dataset's registered name, for the message.
        doing: What was about to happen, for the message (``"test metrics not computed"``).

    Raises:
        DataChangedError: If the trial recorded another fingerprint.
    """
    recorded = trained_fingerprint(trial)
    if recorded and recorded != data.fingerprint:
        raise DataChangedError(
            f"dataset {source!r} changed since trial {trial.number} trained "
            f"({_digits(recorded)} then, {_digits(data.fingerprint)} now): {doing}; class "
            "indices and splits follow the files, so restore them or submit a new study"
        )


def trained_fingerprint(trial: FrozenTrial) -> str | None:
    """The fingerprint of the data ``trial`` trained on, if it recorded one."""
    recorded: Any = trial.user_attrs.get(attrs.INPUT)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("dataset"), dict):
        return None
    fingerprint = recorded["dataset"].get("fingerprint")
    return fingerprint if isinstance(fingerprint, str) else None


def _digits(fingerprint: str) -> str:
    return f"fingerprint {fingerprint[:SHOWN_DIGITS]}"
