"""Serving a study's best model: loaded once, fed images preprocessed exactly as in training.

``serving_trial`` picks the trial whose weights answer (the study's refit model once its
refit is done; else the best trial; with several objectives the first, lowest-numbered
trial of the Pareto front). ``load_serving_model``
rebuilds its model from the trial's configuration and weights (as the test-split
evaluation does) and keeps the last few in memory, keyed by study, trial and weights
artifact. An image goes through what training did to it:

- the decoding of the file sources (``automl.data.decode``: EXIF orientation, rgb or
  grayscale, resized to cover and center-cropped, or padded, as the dataset's ``fit`` says);
  sources without such options (``digits``, ``mnist``, ``cifar10``...) scale an image to
  cover the model's input and crop the center, so an image of the dataset's own size
  (``digits``: 8x8 grayscale, 0-16 stored as 0-255) is used as it is;
- ``ImageData.normalize`` with the training split's per-channel mean and standard
  deviation.

Size, channels, fit, mean, standard deviation and classes are the ones the trial recorded
when it completed (``automl.input`` and ``automl.classes``), as its model card and bundle
state them: the dataset is not read, so serving answers the same after its folder changed
or was removed. Only a trial stored before ``automl.input`` existed loads its dataset again
to recompute them (refused if its classes changed since).

Every image is checked before anything is decoded: its format (png, jpeg, webp, bmp, what
``image_folder`` reads) and its pixel count read from its header, against ``Limits``;
a decompression bomb is refused from its header alone.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.trial import FrozenTrial, TrialState
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from automl.config import Limits
from automl.data import DATASETS, DatasetError, ImageData, load_dataset
from automl.data.decode import (
    PAST_PILLOWS_LIMIT,
    Preprocess,
    fit_image,
    load_oriented,
    refused_files,
    size_refusal,
    too_many_pixels,
)
from automl.data.files import ImageOptions
from automl.data.paths import IMAGE_FORMATS
from automl.delivery.pixel_budget import DECODING
from automl.delivery.refit import as_refit_trial
from automl.delivery.schemas import (
    ClassScore,
    ImagePrediction,
    Predictions,
    Selection,
    ServedModel,
)
from automl.registry import UnknownNameError, validation_messages
from automl.shown_values import shown_path
from automl.store import (
    RefitResult,
    Store,
    StudyNotFoundError,
    attrs,
    best_trials,
    get_frozen_trial,
    load_state_dict,
    served_refit,
)
from automl.store.faults import first_line
from automl.store.refits import serving_pick
from automl.train.accel import Accelerator
from automl.train.evaluation import restore_model
from automl.train.loop import resolve_device
from automl.train.metrics import most_confused
from automl.train.trial_config import TrialConfig, stored_config

logger = logging.getLogger("automl.delivery")

MODEL_CACHE_SIZE = 4
"""Models kept in memory per process (the least recently used is dropped)."""

BATCH = 256
"""Images per forward pass."""

Field = tuple[str | int, ...]
"""Where a rejected input sits in the request, e.g. ``("files", 2)`` or ``("path",)``."""


class DeliveryError(Exception):
    """Base of what predict and annotate refuse."""


class ModelUnavailableError(DeliveryError):
    """The study's model cannot serve: a clip model, a configuration or dataset that cannot
    be loaded again, or weights that do not fit (409 over the API)."""


class InputRejectedError(DeliveryError):
    """An input is refused (422 over the API); the message names the limit and the file.

    Attributes:
        field: Where the input sits in the request.
    """

    def __init__(self, message: str, field: Field) -> None:
        super().__init__(message)
        self.field = field


class UploadTooLargeError(InputRejectedError):
    """The images of one request exceed ``max_upload_bytes`` (413 over the API)."""


class Refusals:
    """The images refused among many, raised as one error that names them all
    (``refused_files``): a request with several bad files is fixed in one go.

    Attributes:
        field: Where the images sit in the request (the error's field when several fail).
        errors: Each refused image's error, in order.
    """

    def __init__(self, field: Field) -> None:
        self.field = field
        self.errors: list[InputRejectedError] = []

    @contextmanager
    def noting(self) -> Iterator[None]:
        """Notes an ``InputRejectedError`` raised inside, instead of raising it."""
        try:
            yield
        except UploadTooLargeError:
            raise  # the whole request, not one image
        except InputRejectedError as exc:
            self.errors.append(exc)

    def raise_any(self) -> None:
        """Raises the one refusal noted, or one naming them all.

        Raises:
            InputRejectedError: If any image was refused.
        """
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise InputRejectedError(refused_files([str(exc) for exc in self.errors]), self.field)


@dataclass(frozen=True)
class Upload:
    """One image file to classify, as sent."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ServingTrial:
    """The trial whose weights serve a study's predictions, and why it was chosen."""

    study_id: int
    trial: FrozenTrial
    selection: Selection
    note: str | None = None


def chosen_trial(store: Store, study_id: int, number: int) -> ServingTrial:
    """Trial ``number`` of the study, named by the caller (a trade-off of a Pareto front,
    or a runner-up): its own weights, never a refit's.

    Raises:
        StudyNotFoundError, TrialNotFoundError: If either does not exist.
        ModelUnavailableError: If the trial did not complete.
    """
    trial = get_frozen_trial(store, study_id, number)
    if trial.state != TrialState.COMPLETE:
        raise ModelUnavailableError(
            f"trial {number} of study {study_id} did not complete ({trial.state.name.lower()}): "
            "only a completed trial has a model"
        )
    return ServingTrial(study_id, trial, "chosen")


def serving_trial(store: Store, study_id: int) -> ServingTrial:
    """The trial whose model predicts for ``study_id``.

    The refit model once the study's refit is done (a view of the retrained trial whose
    weights are the refit's, ``automl.delivery.refit``); else the study's best trial; with
    several objectives, the first (lowest-numbered) trial of the Pareto front, and the
    response says so. The one place that decides it.

    A single-objective study with a completed trial (every predict request, mostly) costs
    ``serving_pick``'s two statements and the loading of that one trial.

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
    """
    pick = serving_pick(store, study_id)
    if pick is not None:
        try:
            trial = store.reader.get_trial(pick.trial_id)
        except KeyError:  # the study was deleted since the pick
            raise StudyNotFoundError(study_id) from None
        if pick.refit is None:
            return ServingTrial(study_id, trial, "best_trial")
        return _refit_serving(study_id, trial, pick.refit)
    # Several objectives, or the study's absence or lack of a best trial to report.
    refit = served_refit(store, study_id)
    if refit is not None:
        trial = get_frozen_trial(store, study_id, refit.trial_number)
        return _refit_serving(study_id, trial, refit)
    best = best_trials(store, study_id)
    first = best.trials[0]
    trial = get_frozen_trial(store, study_id, first.number)
    if len(best.directions) == 1:
        return ServingTrial(study_id, trial, "best_trial")
    note = (
        f"{len(best.directions)} objectives ({', '.join(best.metrics)}): trial "
        f"{first.number} is the first of the {len(best.trials)} trials on the Pareto front"
    )
    return ServingTrial(study_id, trial, "pareto_front_first", note)


def _refit_serving(study_id: int, trial: FrozenTrial, refit: RefitResult) -> ServingTrial:
    """The refit model of ``trial``, the trial that ``refit`` retrained."""
    note = (
        f"trial {refit.trial_number}'s configuration retrained on train + validation "
        f"for {refit.epochs} epochs (refit)"
    )
    return ServingTrial(
        study_id, as_refit_trial(trial, refit, _mistakes(trial, refit)), "refit", note
    )


def _mistakes(trial: FrozenTrial, refit: RefitResult) -> list[dict[str, Any]] | None:
    """The refit's most frequent test mistakes, from its confusion matrix (its stored
    result keeps no list of them; the matrix is kept up to ``DENSE_CONFUSION_CLASSES``)."""
    classes = trial.user_attrs.get(attrs.CLASSES)
    confusion = refit.test_confusion
    if not classes or confusion is None or len(confusion) != len(classes):
        return None
    return most_confused(torch.tensor(confusion), tuple(str(name) for name in classes))


@dataclass(frozen=True)
class ServingModel:
    """A trained model ready to classify images.

    Attributes:
        model: The network, in eval mode on ``accel.device``.
        data: The classes, input shape and normalization statistics the trial trained
            with (its splits are empty).
        prep: How an image file becomes a uint8 ``(C, H, W)`` array.
        accel: Device, precision and memory format of the forward pass.
    """

    model: torch.nn.Module
    data: ImageData
    prep: Preprocess
    accel: Accelerator

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in output order."""
        return self.data.classes

    def decode(self, source: bytes | Path, name: str, field: Field, max_pixels: int) -> np.ndarray:
        """Decodes one image as training decoded the dataset's files, within this
        process's budget of pixels decoded at once (``automl.delivery.pixel_budget``).

        Raises:
            InputRejectedError: If it is not an image of an accepted format, has more
                pixels than ``max_pixels``, or cannot be decoded.
        """
        with (
            open_image(source, name, field, max_pixels) as opened,
            DECODING.hold(opened.width * opened.height),
        ):
            try:
                image = load_oriented(opened, self.prep)
            except Exception as exc:  # Pillow raises many kinds on hostile data: all a 422
                raise InputRejectedError(f"cannot decode image {name!r}: {exc}", field) from None
            return fit_image(image, self.prep)

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of uint8 images ``(N, C, H, W)``, float32 ``(N, K)`` on the CPU."""
        device = self.accel.device
        out = []
        for start in range(0, len(images), BATCH):
            batch = self.accel.batch(self.data.normalize(images[start : start + BATCH].to(device)))
            with self.accel.autocast():
                logits = self.model(batch).float()
            out.append(logits.softmax(dim=1).cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes))

    def top(self, probabilities: torch.Tensor, k: int) -> list[list[ClassScore]]:
        """The ``k`` most probable classes of each row, most probable first."""
        values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        return [
            [
                ClassScore(label=self.classes[index], index=index, probability=value)
                for value, index in zip(row_values, row_indices, strict=True)
            ]
            for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def served(self, serving: ServingTrial) -> ServedModel:
        """What the response says about the model."""
        return ServedModel(
            study_id=serving.study_id,
            trial_number=serving.trial.number,
            selection=serving.selection,
            note=serving.note,
            classes=list(self.classes),
            input_shape=list(self.data.input_shape),
        )


@contextmanager
def open_image(
    source: bytes | Path, name: str, field: Field, max_pixels: int
) -> Iterator[Image.Image]:
    """Opens an image after checking its format and pixel count from its header.

    Nothing beyond the header is decoded before the checks pass, so a decompression bomb
    (a small file that declares a huge image) is refused without the memory it asks for.

    Raises:
        InputRejectedError: If the data is not a png, jpeg, webp or bmp image, has more
            than ``max_pixels`` pixels or a side over ``MAX_SIDE``.
    """
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(handle, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise InputRejectedError(
            too_many_pixels(name, PAST_PILLOWS_LIMIT, max_pixels), field
        ) from None
    except UnidentifiedImageError:
        if _is_empty(source):
            raise InputRejectedError(f"{name!r} is empty (0 bytes)", field) from None
        raise InputRejectedError(f"{name!r} is not a png, jpeg, webp or bmp image", field) from None
    except Exception as exc:  # Pillow raises many kinds on hostile data: all a 422
        raise InputRejectedError(f"cannot read image {name!r}: {exc}", field) from None
    with image:
        refusal = size_refusal(name, image.width, image.height, max_pixels)
        if refusal is not None:
            raise InputRejectedError(refusal, field)
        yield image


def _is_empty(source: bytes | Path) -> bool:
    try:
        return len(source) == 0 if isinstance(source, bytes) else source.stat().st_size == 0
    except OSError:
        return False


def check_image(
    source: bytes | Path, name: str, field: Field, max_pixels: int, *, decode: bool = False
) -> int:
    """Checks an image's format and pixel count from its header, decoding nothing; with
    ``decode``, then decodes its data too (a JPEG at an eighth of its size, which reads
    every byte of it), within the process's pixel budget.

    Returns:
        Its pixel count.

    Raises:
        InputRejectedError: As ``open_image``, or if ``decode`` and its data is damaged.
    """
    with open_image(source, name, field, max_pixels) as opened:
        pixels = opened.width * opened.height
        if not decode:
            return pixels
        with DECODING.hold(pixels):
            try:
                if opened.format == "JPEG":
                    opened.draft(opened.mode, (opened.width // 8 or 1, opened.height // 8 or 1))
                opened.load()
            except Exception as exc:  # Pillow raises many kinds on damaged data
                raise InputRejectedError(f"cannot decode image {name!r}: {exc}", field) from None
        return pixels


ImageSource = tuple[bytes | Path, str, Field]
"""An image to check: its bytes or file, the name errors show, and its field."""


def check_images(images: Sequence[ImageSource], field: Field, max_pixels: int) -> None:
    """Checks every image's header, decoding nothing while all pass.

    Once one is refused, the others are decoded as well (up to ``max_pixels`` pixels in
    all: a refused request costs at most one large image's decoding), so that the one error
    names every bad file of the request: a truncated file passes its header check and
    would only be found by the next try.

    Raises:
        InputRejectedError: If any image is refused (of ``field`` when several are).
    """
    refused: dict[int, InputRejectedError] = {}
    sizes: dict[int, int] = {}
    for index, (source, name, where) in enumerate(images):
        try:
            sizes[index] = check_image(source, name, where, max_pixels)
        except UploadTooLargeError:
            raise
        except InputRejectedError as exc:
            refused[index] = exc
    if not refused:
        return
    decoded = 0
    for index, (source, name, where) in enumerate(images):
        if index in refused:
            continue
        if decoded + sizes[index] > max_pixels:
            continue  # a smaller one further on may still fit
        decoded += sizes[index]
        try:
            check_image(source, name, where, max_pixels, decode=True)
        except InputRejectedError as exc:
            refused[index] = exc
    refusals = Refusals(field)
    refusals.errors = [refused[index] for index in sorted(refused)]
    refusals.raise_any()


def too_many_images(limits: Limits, count: int | None = None) -> str:
    """The refusal of more than ``max_images`` images (``count`` of them, if counted)."""
    sent = f"{count} images" if count is not None else f"more than {limits.max_images} images"
    return f"{sent}; max_images allows {limits.max_images} per request (AUTOML_LIMIT_MAX_IMAGES)"


def check_uploads(uploads: Sequence[Upload], limits: Limits) -> None:
    """Refuses an upload over a limit, before the model is loaded or anything decoded.

    Raises:
        UploadTooLargeError: If the images together exceed ``max_upload_bytes``.
        InputRejectedError: If there are none, more than ``max_images``, or any is not an
            accepted image or has more than ``max_image_pixels`` pixels (all such named).
    """
    if not uploads:
        raise InputRejectedError("send one or more images (multipart field 'files')", ("files",))
    if len(uploads) > limits.max_images:
        raise InputRejectedError(too_many_images(limits, len(uploads)), ("files",))
    total = sum(len(upload.data) for upload in uploads)
    if total > limits.max_upload_bytes:
        raise UploadTooLargeError(
            f"the images have {total} bytes; max_upload_bytes allows {limits.max_upload_bytes} "
            "(AUTOML_LIMIT_MAX_UPLOAD_BYTES)",
            ("files",),
        )
    images = [(upload.data, upload.name, ("files", i)) for i, upload in enumerate(uploads)]
    check_images(images, ("files",), limits.max_image_pixels)


class ModelCache:
    """The last few loaded models, least recently used dropped first; thread-safe.

    Each model is loaded once even when many requests ask for it at the same time.
    """

    def __init__(self, size: int = MODEL_CACHE_SIZE) -> None:
        self.size = size
        self.loads = 0
        """How many models were loaded (not found in the cache)."""
        self._models: OrderedDict[tuple[object, ...], ServingModel] = OrderedDict()
        self._loading: dict[tuple[object, ...], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], load: Callable[[], ServingModel]) -> ServingModel:
        """The model under ``key``, loaded with ``load()`` if not kept."""
        with self._lock:
            found = self._take(key)
            if found is not None:
                return found
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                found = self._take(key)
            if found is not None:
                return found
            try:
                model = load()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self.loads += 1
                self._models[key] = model
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
        return model

    def clear(self) -> None:
        """Drops every kept model."""
        with self._lock:
            self._models.clear()

    def _take(self, key: tuple[object, ...]) -> ServingModel | None:
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
        return model


MODELS = ModelCache()
"""The process's model cache."""


def load_serving_model(
    store: Store, serving: ServingTrial, device: str | torch.device = "cpu"
) -> ServingModel:
    """The model of ``serving``'s trial, from the cache or loaded (once) into it.

    Keyed by study id, trial number, weights artifact and device: new weights under the
    same trial number (a resumed study, a future refit) load anew.

    Raises:
        WeightsNotFoundError: If the trial kept no weights.
        ModelUnavailableError: If the model cannot be rebuilt or its dataset loaded.
    """
    trial = serving.trial
    resolved = resolve_device(device)
    key = (serving.study_id, trial.number, trial.user_attrs.get(attrs.WEIGHTS), str(resolved))
    return MODELS.get(key, lambda: _load(store, trial, resolved))


def finite_state_dict(trial: FrozenTrial, store: Store) -> dict[str, torch.Tensor]:
    """The trial's weights, refused unless every value is finite: NaN logits would score
    as class 0, in predict and in a bundle alike.

    Raises:
        WeightsNotFoundError: If the trial has no readable weights.
        ModelUnavailableError: If a weight is not finite.
    """
    state_dict = load_state_dict(trial, store.artifacts)
    if not all(torch.isfinite(tensor).all() for tensor in state_dict.values()):
        # Kept before training refused diverged runs, or the file was damaged since.
        raise ModelUnavailableError(
            f"the weights of trial {trial.number} are not finite (its training diverged, "
            "or the file was damaged since); it has no model to serve"
        )
    return state_dict


def _load(store: Store, trial: FrozenTrial, device: torch.device) -> ServingModel:
    """Rebuilds ``trial``'s model with its weights and the preprocessing it trained with."""
    raw = trial.user_attrs.get(attrs.CONFIG)
    if raw is None:
        raise ModelUnavailableError(f"trial {trial.number} kept no configuration")
    try:
        config = stored_config(raw)
    except ValidationError as exc:
        raise ModelUnavailableError(
            f"trial {trial.number}'s configuration no longer validates: {error_text(exc)}"
        ) from None
    state_dict = finite_state_dict(trial, store)
    recorded = recorded_stats(trial)
    data = recorded if recorded is not None else _dataset_now(trial, config)
    if len(data.input_shape) != 3 or data.input_shape[0] not in (1, 3):
        raise ModelUnavailableError(
            f"dataset {config.dataset.source!r} has samples shaped {list(data.input_shape)}; "
            "predict and annotate classify still grayscale or RGB images"
        )
    if recorded is not None:
        prep = recorded_preprocess(trial.user_attrs[attrs.INPUT])
    else:
        prep = preprocessing(config, data)
    try:
        model = restore_model(config, state_dict, data.input_shape, data.num_classes)
    except (RuntimeError, ValueError) as exc:
        raise ModelUnavailableError(
            f"the weights of trial {trial.number} do not fit its model: {exc}"
        ) from None
    accel = Accelerator.for_device(device, len(data.input_shape), config.precision)
    logger.info(
        "serving trial %d (%s, %d classes) on %s",
        trial.number,
        config.model.name,
        data.num_classes,
        device,
    )
    return ServingModel(accel.model(model), data, prep, accel)


def recorded_stats(trial: FrozenTrial) -> ImageData | None:
    """The classes, input shape and normalization ``trial`` recorded when it trained, as an
    ``ImageData`` with empty splits; None for a trial from before ``automl.input``.

    Raises:
        ModelUnavailableError: If the recorded input is malformed.
    """
    recorded = trial.user_attrs.get(attrs.INPUT)
    classes = trial.user_attrs.get(attrs.CLASSES)
    if recorded is None or classes is None:
        return None
    try:
        shape = tuple(int(size) for size in recorded["shape"])
        mean = torch.tensor(recorded["mean"], dtype=torch.float32)
        std = torch.tensor(recorded["std"], dtype=torch.float32)
        fingerprint = str((recorded.get("dataset") or {}).get("fingerprint", ""))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelUnavailableError(
            f"trial {trial.number}'s recorded input ({attrs.INPUT}) is malformed: {exc!r}"
        ) from None
    if len(shape) < 3 or mean.shape != (shape[-3],) or std.shape != (shape[-3],):
        raise ModelUnavailableError(
            f"trial {trial.number}'s recorded input ({attrs.INPUT}) has samples shaped "
            f"{list(shape)} but {len(mean)} means and {len(std)} standard deviations"
        )
    empty_y = torch.empty(0, dtype=torch.int64)
    return ImageData(
        train_x=torch.empty((0, *shape), dtype=torch.uint8),
        train_y=empty_y,
        val_x=torch.empty((0, *shape), dtype=torch.uint8),
        val_y=empty_y.clone(),
        classes=tuple(str(name) for name in classes),
        mean=mean,
        std=std,
        fingerprint=fingerprint,
    )


def recorded_preprocess(recorded: Mapping[str, Any]) -> Preprocess:
    """How the trial whose ``automl.input`` is ``recorded`` decoded image files.

    Raises:
        ModelUnavailableError: If ``recorded`` lacks the size, fit or color.
    """
    try:
        return Preprocess(
            height=int(recorded["height"]),
            width=int(recorded["width"]),
            fit=recorded["fit"],
            channels=recorded["color"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUnavailableError(
            f"the recorded input ({attrs.INPUT}) lacks the decoding: {exc!r}"
        ) from None


def _dataset_now(trial: FrozenTrial, config: TrialConfig) -> ImageData:
    """A trial from before ``automl.input``: its dataset's statistics, recomputed from the
    data as it is now, refused if its classes changed since the trial trained."""
    logger.warning(
        "trial %d recorded no model input; recomputing its normalization from dataset %r",
        trial.number,
        config.dataset.source,
    )
    data = dataset_stats(config)
    trained_classes = trial.user_attrs.get(attrs.CLASSES)
    if trained_classes is not None and list(trained_classes) != list(data.classes):
        raise ModelUnavailableError(
            f"the classes of dataset {config.dataset.source!r} changed since trial "
            f"{trial.number} trained: {', '.join(trained_classes)} then, "
            f"{', '.join(data.classes)} now"
        )
    return data


def dataset_stats(config: TrialConfig) -> ImageData:
    """The trial's dataset with empty splits: classes, shape, mean and std only.

    Raises:
        ModelUnavailableError: If the dataset cannot be loaded (one line saying why).
    """
    try:
        data = load_dataset(config.dataset.source, config.dataset.options)
    except (DatasetError, ValidationError, UnknownNameError, OSError) as exc:
        raise ModelUnavailableError(
            f"cannot load dataset {config.dataset.source!r}, whose normalization the model "
            f"needs: {error_text(exc)}"
        ) from None
    return ImageData(
        train_x=data.train_x[:0].clone(),
        train_y=data.train_y[:0].clone(),
        val_x=data.val_x[:0].clone(),
        val_y=data.val_y[:0].clone(),
        classes=data.classes,
        mean=data.mean.clone(),
        std=data.std.clone(),
        fingerprint=data.fingerprint,
    )


def preprocessing(config: TrialConfig, data: ImageData) -> Preprocess:
    """How training turned files into arrays: the file source's options, or (for sources
    of fixed-size arrays) cover-and-crop to the input size in its channels."""
    options = DATASETS.get(config.dataset.source).parse_options(config.dataset.options)
    if isinstance(options, ImageOptions):
        return options.preprocess
    channels, height, width = data.input_shape
    return Preprocess(
        height=height, width=width, fit="crop", channels="grayscale" if channels == 1 else "rgb"
    )


def error_text(exc: Exception) -> str:
    """An exception as one line: a pydantic error as its first ``field: message`` (without
    pydantic's decorations), anything else as the first line of its message."""
    if isinstance(exc, ValidationError):
        loc, message = validation_messages(exc)[0]
        where = ".".join(map(str, loc))
        return f"{where}: {message}" if where else message
    return first_line(exc)


def classify(
    model: ServingModel, arrays: Sequence[np.ndarray], top: int
) -> tuple[torch.Tensor, list[list[ClassScore]]]:
    """Probabilities ``(N, K)`` of decoded images and their ``top`` classes."""
    if not arrays:
        empty = torch.empty(0, len(model.classes))
        return empty, []
    probabilities = model.probabilities(torch.from_numpy(np.stack(arrays)))
    return probabilities, model.top(probabilities, top)


DECODE_CHUNK = 512
"""Files decoded and classified at a time: memory stays bounded for any number of files."""


@dataclass(frozen=True)
class ImageFile:
    """An image file on this machine, the name an answer shows and where it sits in the
    request (for a refusal)."""

    path: Path
    name: str
    field: Field


def classify_files(
    store: Store,
    study_id: int,
    files: Sequence[ImageFile],
    field: Field,
    *,
    top: int,
    limits: Limits,
    device: str | torch.device = "cpu",
) -> tuple[ServedModel, list[list[ClassScore]]]:
    """Classifies image files from disk with the study's serving model, any number of them.

    Every header is checked before the model is loaded; files are decoded straight from
    disk, ``DECODE_CHUNK`` at a time. Every file refused at a stage is named in one error
    (of ``field`` when there are several).

    Returns:
        The model that answered and, per file in order, its ``top`` classes.

    Raises:
        InputRejectedError: If any file has too many pixels, is not an accepted image, or
            cannot be decoded.
        StudyNotFoundError, NoBestTrialError, WeightsNotFoundError: If there is no model.
        ModelUnavailableError: If the model cannot serve.
    """
    pixels = limits.max_image_pixels
    check_images([(file.path, file.name, file.field) for file in files], field, pixels)
    refusals = Refusals(field)
    serving = serving_trial(store, study_id)
    model = load_serving_model(store, serving, device)
    tops: list[list[ClassScore]] = []
    for start in range(0, len(files), DECODE_CHUNK):
        arrays = []
        for file in files[start : start + DECODE_CHUNK]:
            with refusals.noting():
                arrays.append(model.decode(file.path, file.name, file.field, pixels))
        if not refusals.errors:  # else only looking for the other bad files
            tops += classify(model, arrays, top)[1]
    refusals.raise_any()
    return model.served(serving), tops


def predict_files(
    store: Store,
    study_id: int,
    paths: Sequence[Path],
    *,
    top: int = 3,
    limits: Limits | None = None,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Classifies image files on this machine (``automl predict`` on the local store): any
    number, each named as given. No upload limit applies; ``max_image_pixels`` does.

    Raises:
        As ``classify_files``, each file's field ``files[i]``.
    """
    files = [
        ImageFile(path, shown_path(path), ("files", index)) for index, path in enumerate(paths)
    ]
    model, tops = classify_files(
        store, study_id, files, ("files",), top=top, limits=limits or Limits(), device=device
    )
    predictions = [
        ImagePrediction(file=file.name, top=scores)
        for file, scores in zip(files, tops, strict=True)
    ]
    return Predictions(model=model, predictions=predictions)


def predict_uploads(
    store: Store,
    study_id: int,
    uploads: Sequence[Upload],
    *,
    top: int = 3,
    limits: Limits | None = None,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Classifies uploaded images with the study's serving model.

    Args:
        store: The store holding the study and its weights.
        study_id: The study.
        uploads: The image files, in the order the answer lists them.
        top: Classes listed per image.
        limits: Upload limits (default: ``AUTOML_LIMIT_*``).
        device: Where the model runs.

    Returns:
        The model that answered and, per image, its ``top`` classes, most probable first.

    Raises:
        UploadTooLargeError: If the images together are too large.
        InputRejectedError: If there are too many images, or any is too large in pixels,
            not an accepted format, or cannot be decoded (all such named in one error).
        StudyNotFoundError, NoBestTrialError, WeightsNotFoundError: If there is no model.
        ModelUnavailableError: If the model cannot serve.
    """
    limits = limits or Limits()
    check_uploads(uploads, limits)
    serving = serving_trial(store, study_id)
    model = load_serving_model(store, serving, device)
    refusals = Refusals(("files",))
    arrays = []
    for index, upload in enumerate(uploads):
        with refusals.noting():
            field = ("files", index)
            arrays.append(model.decode(upload.data, upload.name, field, limits.max_image_pixels))
    refusals.raise_any()
    _, tops = classify(model, arrays, top)
    return Predictions(
        model=model.served(serving),
        predictions=[
            ImagePrediction(file=upload.name, top=scores)
            for upload, scores in zip(uploads, tops, strict=True)
        ],
    )
