"""Trial weights in Optuna's artifact store (a local folder by default)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import BaseStorage

from automl.store import attrs

WEIGHTS_FILENAME = "weights.pt"


class WeightsNotFoundError(LookupError):
    """The trial kept no weights (it failed, was pruned, or the artifacts folder moved)."""


def open_artifact_store(directory: Path) -> FileSystemArtifactStore:
    """The artifact store in ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def save_weights(
    storage: BaseStorage,
    trial: optuna.Trial,
    state_dict: dict[str, torch.Tensor],
    directory: Path,
) -> str:
    """Saves a trial's weights as an Optuna artifact and records its id on the trial.

    Returns:
        The artifact id.
    """
    store = open_artifact_store(directory)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS_FILENAME
        torch.save(state_dict, path)
        artifact_id = upload_artifact(
            artifact_store=store,
            file_path=str(path),
            study_or_trial=trial,
            storage=storage,
            mimetype="application/octet-stream",
        )
    storage.set_trial_user_attr(trial._trial_id, attrs.WEIGHTS, artifact_id)
    return artifact_id


def open_weights(trial: optuna.trial.FrozenTrial, directory: Path) -> BinaryIO:
    """Opens a trial's saved weights for reading (a ``torch.save`` state dict).

    Raises:
        WeightsNotFoundError: If the trial has no readable weights.
    """
    artifact_id = trial.user_attrs.get(attrs.WEIGHTS)
    if artifact_id is None:
        raise WeightsNotFoundError(f"trial {trial.number} kept no weights")
    try:
        return open_artifact_store(directory).open_reader(artifact_id)
    except Exception as exc:  # the store raises its own ArtifactNotFound
        raise WeightsNotFoundError(
            f"weights of trial {trial.number} are missing from {directory}"
        ) from exc
