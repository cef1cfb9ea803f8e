"""A study's best model as a zip that runs without automl.

The bundle holds the model of the trial that serves the study's predictions
(``inference.serving_trial``: the refit model once the study's refit is done, else the
best trial, or the first of the Pareto front):

- ``model.safetensors``: the weights (``safetensors.torch.load_file``), whatever format
  the trial stored them in;
- ``model_card.json``: the model card (``automl.delivery.card``) plus what the bundle holds
  (``bundle``);
- ``model.onnx`` and ``model.torchscript.pt``: the exports (``automl.delivery.export``),
  which take float32 ``(N, C, H, W)`` preprocessed as the card says and return logits;
- ``predict.py``: classifies image files with onnxruntime (or torch), numpy and Pillow.

An export that fails is left out and the card says why; the bundle then still holds the
other one. Built on request, in a second or two for automl's small models, from what the
trial stored (configuration, weights, classes, input statistics): the training data is not
read, so a study's bundle builds the same after its dataset moved or was removed. Only a
trial from before ``automl.input`` was recorded loads its dataset for the card's input.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from automl.data import DatasetError
from automl.delivery.card import build_card, library_versions, trial_config, trial_input
from automl.delivery.export import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    ExportError,
    export_onnx,
    export_torchscript,
)
from automl.delivery.inference import ModelUnavailableError, error_text, serving_trial
from automl.store import Store, get_study, load_state_dict
from automl.store.artifacts import weights_bytes
from automl.train.evaluation import restore_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
PREDICT_FILE = "predict.py"
PREDICT_SOURCE = Path(__file__).with_name("bundle_predict.py")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp, so a member changes only with its content (the TorchScript file
alone differs between exports of one model: torch names its modules per process)."""


@dataclass(frozen=True)
class Bundle:
    """A built bundle.

    Attributes:
        study_id: The study.
        trial_number: The trial whose model it holds.
        filename: A name for the zip, ``study<id>-trial<n>-model.zip`` (``-refit-model``
            for a refit model).
        data: The zip file.
        card: Its model card.
    """

    study_id: int
    trial_number: int
    filename: str
    data: bytes
    card: dict[str, Any]


def build_bundle(store: Store, study_id: int) -> Bundle:
    """Builds the bundle of a study's best model (see the module docstring).

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
        WeightsNotFoundError: If the best trial kept no weights.
        ModelUnavailableError: If its configuration no longer validates, its weights do
            not fit it, or (a trial from before model cards) its dataset, whose
            normalization the card states, cannot be loaded here.
    """
    study = get_study(store, study_id)
    serving = serving_trial(store, study_id)
    trial = serving.trial
    state_dict = load_state_dict(trial, store.artifacts)
    try:
        config = trial_config(trial)
        model_in = trial_input(trial, config)
    except (LookupError, ValidationError, DatasetError, OSError) as exc:
        raise ModelUnavailableError(
            f"no model card for trial {trial.number}: {error_text(exc)}"
        ) from None
    card = build_card(
        trial,
        study_id=study_id,
        study_name=study.name,
        metrics=study.metrics,
        directions=study.directions,
        model_in=model_in,
    )
    shape = [int(size) for size in model_in["shape"]]
    try:
        model = restore_model(config, state_dict, tuple(shape), len(card["classes"]))
    except (RuntimeError, ValueError) as exc:
        message = f"the weights of trial {trial.number} do not fit its model: {exc}"
        raise ModelUnavailableError(message) from None
    files: dict[str, bytes] = {WEIGHTS_FILE: weights_bytes(model.state_dict())}
    exports: dict[str, Any] = {}
    for name, filename, export in (
        ("onnx", ONNX_FILE, export_onnx),
        ("torchscript", TORCHSCRIPT_FILE, export_torchscript),
    ):
        try:
            files[filename] = export(model, shape)
            exports[name] = {"file": filename, "error": None}
        except ExportError as exc:
            exports[name] = {"file": None, "error": str(exc)}
    exports["onnx"].update(opset=ONNX_OPSET)
    files[PREDICT_FILE] = PREDICT_SOURCE.read_bytes()
    card["libraries"]["export"] = library_versions()
    card["bundle"] = {
        "weights": WEIGHTS_FILE,
        "exports": exports,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "float32 (N, T, C, H, W)" if len(shape) == 4 else "float32 (N, C, H, W)",
        "output": "logits (N, classes), classes in the order of 'classes'",
        # predict.py reads image files; a clip model takes (T, C, H, W) arrays instead.
        "predict": None if len(shape) == 4 else f"python {PREDICT_FILE} IMAGE [IMAGE ...]",
    }
    files[CARD_FILE] = (json.dumps(card, indent=2, allow_nan=False) + "\n").encode()
    kind = "refit-" if serving.selection == "refit" else ""
    return Bundle(
        study_id=study_id,
        trial_number=trial.number,
        filename=f"study{study_id}-trial{trial.number}-{kind}model.zip",
        data=_zip(files),
        card=card,
    )


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


__all__ = ["Bundle", "build_bundle"]
