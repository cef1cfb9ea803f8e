"""Validation metrics, registered by name, computed from an evaluation record."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from automl.registry import Registry
from automl.train.model_stats import ModelStats

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Evaluation:
    """Everything metrics are computed from after an epoch."""

    confusion: torch.Tensor
    """Validation confusion matrix; rows are true classes, columns predictions."""
    loss: float
    """Mean validation cross-entropy."""
    model: ModelStats
    """The model's size and measured latency."""


@dataclass(frozen=True)
class Metric:
    """A scalar metric: how to compute it and which way is better."""

    compute: Callable[[Evaluation], float]
    """``compute(evaluation) -> value``."""
    direction: Direction
    bounds: tuple[float, float] = (-math.inf, math.inf)
    """The values it can take (a pruner's threshold outside them prunes every trial)."""
    above_low: bool = False
    """Whether every value lies strictly above ``bounds[0]`` (a time, a count of weights):
    a threshold's ``upper`` at that bound prunes every trial too."""


METRICS: Registry[Metric] = Registry("metric", group="automl.metrics")

SHARE = (0.0, 1.0)
"""The bounds of a share (accuracy, recall, F1)."""
AMOUNT = (0.0, math.inf)
"""The bounds of an amount (a loss, a count, a time)."""


def _recalls(confusion: torch.Tensor) -> torch.Tensor:
    support = confusion.sum(dim=1)
    present = support > 0
    return confusion.diagonal()[present] / support[present]


def _f1s(confusion: torch.Tensor) -> torch.Tensor:
    true_pos = confusion.diagonal()
    denominator = confusion.sum(dim=0) + confusion.sum(dim=1)
    present = confusion.sum(dim=1) > 0
    return (2 * true_pos / denominator.clamp(min=1))[present]


def _accuracy(confusion: torch.Tensor) -> float:
    return float(confusion.diagonal().sum() / confusion.sum().clamp(min=1))


METRICS.add(
    "accuracy",
    Metric(lambda e: _accuracy(e.confusion), "maximize", SHARE),
    description="Share of validation images classified correctly.",
)
METRICS.add(
    "balanced_accuracy",
    Metric(lambda e: float(_recalls(e.confusion).mean()), "maximize", SHARE),
    description=(
        "Mean per-class recall over the classes with images in the split; "
        "robust to class imbalance."
    ),
)
METRICS.add(
    "macro_f1",
    Metric(lambda e: float(_f1s(e.confusion).mean()), "maximize", SHARE),
    description="Unweighted mean per-class F1 over the classes with images in the split.",
)
METRICS.add(
    "worst_class_recall",
    Metric(lambda e: float(_recalls(e.confusion).min()), "maximize", SHARE),
    description="Recall of the worst class.",
)
METRICS.add(
    "loss",
    Metric(lambda e: e.loss, "minimize", AMOUNT),
    description="Mean validation cross-entropy.",
)
METRICS.add(
    "params",
    Metric(lambda e: float(e.model.params), "minimize", AMOUNT, above_low=True),
    description="Number of model parameters.",
)
METRICS.add(
    "latency_ms",
    Metric(lambda e: e.model.latency_ms, "minimize", AMOUNT, above_low=True),
    description="Median inference time of one image on the trial's device (ms).",
)
METRICS.add(
    "batch_latency_ms",
    Metric(lambda e: e.model.batch_latency_ms, "minimize", AMOUNT, above_low=True),
    description=(
        "Median inference time of a batch of 256 images on the trial's device (ms); images "
        "larger than 32x32 RGB are measured in a smaller batch, scaled to 256."
    ),
)


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts ``(true, predicted)`` pairs into a ``(num_classes, num_classes)`` int64 matrix."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


DENSE_CONFUSION_CLASSES = 50
"""Up to this many classes a confusion matrix is kept whole. It grows with the square of
the classes (3 MB of JSON per trial at 1,000, in every trial a worker keeps in memory), so
past it only ``most_confused`` is kept."""

MOST_CONFUSED = 100
"""How many of the most frequent confusions ``most_confused`` keeps."""


def dense_confusion(confusion: torch.Tensor) -> list[list[int]] | None:
    """The whole matrix as lists (rows true, columns predicted), up to
    ``DENSE_CONFUSION_CLASSES`` classes; None past them."""
    return confusion.tolist() if len(confusion) <= DENSE_CONFUSION_CLASSES else None


def most_confused(
    confusion: torch.Tensor, classes: tuple[str, ...], limit: int = MOST_CONFUSED
) -> list[dict[str, str | int]]:
    """The most frequent mistakes: ``{"true", "predicted", "count"}`` for the largest cells
    off the diagonal, most frequent first (ties: in row-major order), at most ``limit``."""
    size = len(confusion)
    mistakes = confusion.clone().reshape(-1)
    mistakes[:: size + 1] = 0  # the diagonal: right answers
    found = int((mistakes > 0).sum())
    counts, cells = torch.sort(mistakes, descending=True, stable=True)
    kept = min(found, limit)
    return [
        {"true": classes[cell // size], "predicted": classes[cell % size], "count": count}
        for count, cell in zip(counts[:kept].tolist(), cells[:kept].tolist(), strict=True)
    ]


def compute_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Computes every registered metric."""
    return {name: METRICS.get(name).factory.compute(evaluation) for name in METRICS.names()}


def per_class_report(
    confusion: torch.Tensor, classes: tuple[str, ...]
) -> list[dict[str, float | str | int]]:
    """Precision, recall, F1 and support of each class."""
    true_pos = confusion.diagonal().double()
    predicted = confusion.sum(dim=0).double()
    support = confusion.sum(dim=1).double()
    precision = true_pos / predicted.clamp(min=1)
    recall = true_pos / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return [
        {
            "class": name,
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
