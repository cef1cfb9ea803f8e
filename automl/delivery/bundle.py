"""A study's best model (or one trial's, asked for by number) as a zip that runs without
automl.

The bundle holds the model of the trial that serves the study's predictions
(``inference.serving_trial``: the refit model once the study's refit is done, else the
best trial, or the first of the Pareto front), or of the trial asked for
(``inference.chosen_trial``):

- ``model.safetensors``: the weights (``safetensors.torch.load_file``), whatever format
  the trial stored them in;
- ``model_card.json``: the model card (``automl.delivery.card``) plus what the bundle holds
  (``bundle``);
- ``model.onnx`` and ``model.torchscript.pt``: the exports (``automl.delivery.export``),
  which take float32 ``(N, C, H, W)`` preprocessed as the card says and return logits;
- ``predict.py``: classifies image files with onnxruntime (or torch), numpy and Pillow.

An export that fails is left out and the card says why; the bundle then still holds the
other one. Built from what the trial stored (configuration, weights, classes, input
statistics), in a second or two for automl's small models: the training data is not read,
so a study's bundle builds the same after its dataset moved or was removed. Only a trial
from before ``automl.input`` was recorded loads its dataset for the card's input.

``build_bundle`` builds anew on every call (the CLI's local download). A serving process
asks ``BUNDLES`` (a ``BundleCache``) instead, which builds a model's bundle once (two builds
are not byte-identical: TorchScript numbers its classes per process) and traces in a child
process (``automl.delivery.export.ChildTracer``): each trace leaks its TorchScript classes
in the tracing process for good. Its bundles are keyed by everything that decides their
content (see ``BundleCache``), so a new best trial, a refit or test metrics recorded later
(which change the card) build a new one.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from automl.catalog import load_plugins
from automl.config import Limits
from automl.data import DatasetError
from automl.delivery.card import build_card, library_versions, trial_config, trial_input
from automl.delivery.export import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    ChildTracer,
    ExportError,
    ModelSource,
    export_onnx,
    export_torchscript,
)
from automl.delivery.inference import (
    ModelUnavailableError,
    ServingTrial,
    chosen_trial,
    error_text,
    finite_state_dict,
    serving_trial,
)
from automl.store import Store, attrs, get_study, load_state_dict
from automl.store.artifacts import read_state_dict, weights_bytes
from automl.train.evaluation import restore_model
from automl.train.trial_config import TrialConfig, stored_config

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.torchscript.pt"
PREDICT_FILE = "predict.py"
PREDICT_SOURCE = Path(__file__).with_name("bundle_predict.py")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
"""Every member's timestamp, so a member changes only with its content (the TorchScript file
alone differs between exports of one model: torch names its modules per process)."""
BUNDLE_CACHE_SIZE = 8
"""Bundles a serving process keeps (the least recently used is dropped)."""
BUNDLE_CACHE_BYTES = 512 * 2**20
"""The most bytes of bundles it keeps; a larger bundle is served but not kept."""

Key = tuple[object, ...]
Tracer = Callable[[torch.nn.Module, Sequence[int], ModelSource], bytes]
"""Makes the TorchScript file of a model (``trace_here``), or traces in another process,
which rebuilds the model from its ``ModelSource`` (``ChildTracer``)."""


def trace_here(model: torch.nn.Module, shape: Sequence[int], source: ModelSource) -> bytes:
    """``export_torchscript`` in this process (a one-off process: the CLI)."""
    return export_torchscript(model, shape)


def rebuild_model(
    config: dict[str, Any], weights: bytes, shape: tuple[int, ...], num_classes: int
) -> torch.nn.Module:
    """A trial's model from its recorded configuration and safetensors weights (in a
    tracing process: plugins registered first, no pickled code run)."""
    load_plugins()
    return restore_model(stored_config(config), read_state_dict(weights), shape, num_classes)


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
        digest: The SHA-256 of ``data``, in hex (the API's ``ETag``).
    """

    study_id: int
    trial_number: int
    filename: str
    data: bytes
    card: dict[str, Any]
    digest: str


@dataclass(frozen=True)
class _Plan:
    """What a study's bundle is built from, read from the store without building it.

    Attributes:
        serving: The trial whose model the bundle holds.
        config: Its configuration.
        model_in: What its model takes (``trial_input``).
        card: Its model card, without what the build adds (export libraries, ``bundle``).
        study: The store, study and model: ``(url, study_id, "best")``, or ``(url,
            study_id, "trial", number)`` for a trial asked for by number.
        key: What decides the bundle's content: ``study``, then the serving trial's id,
            whether it serves a refit, its weights artifact and the card's digest.
    """

    serving: ServingTrial
    config: TrialConfig
    model_in: dict[str, Any]
    card: dict[str, Any]
    study: Key
    key: Key


def build_bundle(store: Store, study_id: int, number: int | None = None) -> Bundle:
    """Builds the bundle of a study's best model (see the module docstring), or of its
    trial ``number`` (``chosen_trial``), anew.

    Raises:
        StudyNotFoundError: If there is no such study.
        TrialNotFoundError: If the study has no trial ``number``.
        NoBestTrialError: If no trial has completed yet.
        WeightsNotFoundError: If the trial kept no weights.
        ModelUnavailableError: If its configuration no longer validates, its weights do
            not fit it, or (a trial from before model cards) its dataset, whose
            normalization the card states, cannot be loaded here.
    """
    return _build(store, _plan(store, study_id, number))


def _plan(store: Store, study_id: int, number: int | None = None) -> _Plan:
    """The serving trial, its configuration, input and card: database reads, no weights.

    Raises:
        As ``build_bundle``, but ``WeightsNotFoundError`` only for a trial that has
        neither weights nor a model card.
    """
    study = get_study(store, study_id)
    if number is None:
        serving = serving_trial(store, study_id)
    else:
        serving = chosen_trial(store, study_id, number)
    trial = serving.trial
    try:
        config = trial_config(trial)
        model_in = trial_input(trial, config)
    except (LookupError, ValidationError, DatasetError, OSError) as exc:
        load_state_dict(trial, store.artifacts)  # missing weights are the error to report
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
    card_digest = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode())
    # A study's best model and each trial asked for by number are bundles of their own: a
    # new one replaces only its own older ones.
    model: Key = ("best",) if number is None else ("trial", number)
    study_key: Key = (store.url, study_id, *model)
    key = (
        *study_key,
        trial.number,  # of this study (in the key); its weights' id tells a rerun apart
        serving.selection == "refit",
        trial.user_attrs.get(attrs.WEIGHTS),
        card_digest.hexdigest(),
    )
    return _Plan(serving, config, model_in, card, study_key, key)


def _build(store: Store, plan: _Plan, trace: Tracer = trace_here) -> Bundle:
    """Loads the planned trial's weights, exports its model (``trace`` makes its
    TorchScript file) and zips the bundle.

    Raises:
        WeightsNotFoundError: If the trial kept no weights.
        ModelUnavailableError: If its weights do not fit its model.
    """
    trial, model_in = plan.serving.trial, plan.model_in
    state_dict = finite_state_dict(trial, store)
    shape = [int(size) for size in model_in["shape"]]
    classes = plan.card["classes"]
    try:
        model = restore_model(plan.config, state_dict, tuple(shape), len(classes))
    except (RuntimeError, ValueError) as exc:
        message = f"the weights of trial {trial.number} do not fit its model: {exc}"
        raise ModelUnavailableError(message) from None
    files: dict[str, bytes] = {WEIGHTS_FILE: weights_bytes(model.state_dict())}
    source = ModelSource(
        rebuild_model,
        (plan.config.model_dump(mode="json"), files[WEIGHTS_FILE], tuple(shape), len(classes)),
    )
    exports: dict[str, Any] = {}
    for name, filename, export in (
        ("onnx", ONNX_FILE, lambda: export_onnx(model, shape)),
        ("torchscript", TORCHSCRIPT_FILE, lambda: trace(model, shape, source)),
    ):
        try:
            files[filename] = export()
            exports[name] = {"file": filename, "error": None}
        except ExportError as exc:
            exports[name] = {"file": None, "error": str(exc)}
    exports["onnx"].update(opset=ONNX_OPSET)
    files[PREDICT_FILE] = PREDICT_SOURCE.read_bytes()
    card = {
        **plan.card,
        "libraries": {**plan.card["libraries"], "export": library_versions()},
        "bundle": {
            "weights": WEIGHTS_FILE,
            "exports": exports,
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_layout": (
                "float32 (N, T, C, H, W)" if len(shape) == 4 else "float32 (N, C, H, W)"
            ),
            "output": "logits (N, classes), classes in the order of 'classes'",
            # predict.py reads image files; a clip model takes (T, C, H, W) arrays instead.
            "predict": None if len(shape) == 4 else f"python {PREDICT_FILE} IMAGE [IMAGE ...]",
            # predict.py's limit: the one the service's own predictions had when it was built.
            "max_image_pixels": Limits().max_image_pixels,
            # Why this trial (ServedModel.selection): with several objectives, which of the
            # Pareto front's trials is no choice the card's metrics tell.
            "selection": plan.serving.selection,
        },
    }
    files[CARD_FILE] = (json.dumps(card, indent=2, allow_nan=False) + "\n").encode()
    kind = "refit-" if plan.serving.selection == "refit" else ""
    data = _zip(files)
    return Bundle(
        study_id=plan.serving.study_id,
        trial_number=trial.number,
        filename=f"study{plan.serving.study_id}-trial{trial.number}-{kind}model.zip",
        data=data,
        card=card,
        digest=hashlib.sha256(data).hexdigest(),
    )


class BundleCache:
    """The bundles of the last few models served, least recently used dropped first;
    thread-safe. Each is built once, even when many requests ask for it at the same time.

    Every ``get`` reads what decides the bundle's content (``_Plan.key``: the serving
    trial, whether it is a refit, its weights and its model card, which changes when test
    metrics arrive), so a changed model or card builds a new bundle; the older bundles of
    the same model (the study's best, or the same trial asked for) are then dropped, since
    only the latest serves.

    Args:
        size: The most bundles kept.
        max_bytes: The most bytes of bundles kept; a larger bundle is served, not kept.
        trace: Makes the TorchScript file (default: ``CHILD_TRACER``, in a child process).

    Attributes:
        builds: How many bundles were built (not found kept).
    """

    def __init__(
        self,
        size: int = BUNDLE_CACHE_SIZE,
        max_bytes: int = BUNDLE_CACHE_BYTES,
        trace: Tracer | None = None,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.trace = trace or CHILD_TRACER
        self.builds = 0
        self._bundles: OrderedDict[Key, Bundle] = OrderedDict()
        self._building: dict[Key, threading.Lock] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._bundles)

    def get(self, store: Store, study_id: int, number: int | None = None) -> Bundle:
        """The bundle of the study's best model (or of its trial ``number``), kept or
        built (``build_bundle``).

        Raises:
            As ``build_bundle``.
        """
        plan = _plan(store, study_id, number)
        with self._lock:
            found = self._take(plan.key)
            if found is not None:
                return found
            key_lock = self._building.setdefault(plan.key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._take(plan.key)
            if found is not None:
                return found
            try:
                bundle = _build(store, plan, self.trace)
                with self._lock:
                    self.builds += 1
                    self._keep(plan, bundle)
            finally:
                # After it is kept: a request arriving in between finds it, not no lock.
                with self._lock:
                    self._building.pop(plan.key, None)
        return bundle

    def clear(self) -> None:
        """Drops every kept bundle."""
        with self._lock:
            self._bundles.clear()

    def _take(self, key: Key) -> Bundle | None:
        bundle = self._bundles.get(key)
        if bundle is not None:
            self._bundles.move_to_end(key)
        return bundle

    def _keep(self, plan: _Plan, bundle: Bundle) -> None:
        if len(bundle.data) > self.max_bytes:
            return
        for stale in [key for key in self._bundles if key[: len(plan.study)] == plan.study]:
            del self._bundles[stale]
        self._bundles[plan.key] = bundle
        while len(self._bundles) > self.size or self._bytes() > self.max_bytes:
            self._bundles.popitem(last=False)

    def _bytes(self) -> int:
        return sum(len(bundle.data) for bundle in self._bundles.values())


CHILD_TRACER = ChildTracer()
"""Traces the models of a serving process's bundles, in a child process (none until the
first build)."""

BUNDLES = BundleCache()
"""The process's bundle cache (the API's downloads)."""


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


__all__ = [
    "BUNDLES",
    "BUNDLE_CACHE_BYTES",
    "BUNDLE_CACHE_SIZE",
    "Bundle",
    "BundleCache",
    "build_bundle",
]
