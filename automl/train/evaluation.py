"""Scoring trained weights on a held-out split (the test split, once a study completes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from automl.data import ImageData, load_dataset
from automl.models import MODELS, build_model
from automl.models.transfer import TransferOptions
from automl.train.accel import Accelerator
from automl.train.loop import evaluate, resolve_device
from automl.train.metrics import (
    Evaluation,
    compute_metrics,
    dense_confusion,
    most_confused,
    per_class_report,
)
from automl.train.model_stats import profile_model
from automl.train.trial_config import TrialConfig

Split = Literal["val", "test"]

logger = logging.getLogger("automl.train")


class NoSplitError(LookupError):
    """The dataset has no such split (most sources have a test split only when asked)."""


@dataclass(frozen=True)
class SplitReport:
    """Every metric, the per-class report and the confusion matrix of weights on a split."""

    split: str
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | None
    """None past ``DENSE_CONFUSION_CLASSES`` classes."""
    most_confused: list[dict[str, Any]]
    samples: int


def restore_model(
    config: TrialConfig,
    state_dict: Mapping[str, torch.Tensor],
    input_shape: tuple[int, ...],
    num_classes: int,
) -> torch.nn.Module:
    """Rebuilds the model of ``config`` for the data's shape and classes with trained weights.

    The weights replace everything, so a ``pretrained`` checkpoint named in the options is
    not read again (it need not exist any more). The model is on the CPU, in eval mode.

    Raises:
        RuntimeError: If ``state_dict`` does not fit the architecture.
    """
    options = dict(config.model.options)
    if options.get("pretrained") and issubclass(
        MODELS.get(config.model.name).options, TransferOptions
    ):
        options["pretrained"] = None
    model = build_model(config.model.name, options, input_shape, num_classes)
    model.load_state_dict(dict(state_dict))
    return model.eval()


def evaluate_weights(
    config: TrialConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    split: Split = "test",
    data: ImageData | None = None,
    device: str | torch.device = "cpu",
) -> SplitReport:
    """Rebuilds the model of ``config``, loads ``state_dict`` and scores it on ``split``.

    Raises:
        NoSplitError: If the dataset has no ``split``.
    """
    device = resolve_device(device)
    if data is None:
        data = load_dataset(config.dataset.source, config.dataset.options)
    images, labels = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    if images is None or labels is None:
        raise NoSplitError(f"dataset {config.dataset.source!r} has no {split} split")
    model = restore_model(config, state_dict, data.input_shape, data.num_classes)
    accel = Accelerator.for_device(device, len(data.input_shape), config.precision)
    model = accel.model(model)
    confusion, mean_loss = evaluate(
        model,
        images.to(device),
        labels.to(device),
        data.num_classes,
        accel,
        data.normalize,
    )
    stats = profile_model(model, data.input_shape, accel)
    failures: dict[str, str] = {}
    metrics = compute_metrics(Evaluation(confusion, mean_loss, stats), failures=failures)
    for message in failures.values():  # a plugin's metric: left out of this split's
        logger.warning("on the %s split, %s", split, message)
    return SplitReport(
        split=split,
        metrics=metrics,
        per_class=per_class_report(confusion, data.classes),
        confusion=dense_confusion(confusion),
        most_confused=most_confused(confusion, data.classes),
        samples=len(labels),
    )
