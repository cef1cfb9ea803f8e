"""Validation metrics, registered by name, computed from an evaluation record."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from automl.registry import BUILTIN_SOURCE, Registry
from automl.train.model_stats import ModelStats
from automl.wording import clipped

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


# Shares are exact functions of the counts, rounded once: in float32 (what integer tensors
# divide into), or summed in floats, equal shares such as mean recalls of 14/15 from
# different counts came out apart, and the later trial or epoch of a tie ranked first.


def _shares(numerators: torch.Tensor, denominators: torch.Tensor) -> list[Fraction]:
    """``numerators / denominators`` as exact fractions (a zero denominator: 0)."""
    pairs = zip(numerators.tolist(), denominators.tolist(), strict=True)
    return [Fraction(int(n), int(d)) if d else Fraction(0) for n, d in pairs]


def _recalls(confusion: torch.Tensor) -> list[Fraction]:
    """Each class's recall, for the classes with images in the split."""
    support = confusion.sum(dim=1)
    present = support > 0
    return _shares(confusion.diagonal()[present], support[present])


def _f1s(confusion: torch.Tensor) -> list[Fraction]:
    """Each class's F1, for the classes with images in the split."""
    present = confusion.sum(dim=1) > 0
    denominators = confusion.sum(dim=0) + confusion.sum(dim=1)
    return _shares((2 * confusion.diagonal())[present], denominators[present])


def _mean(shares: list[Fraction]) -> float:
    return float(sum(shares) / len(shares)) if shares else math.nan


def _accuracy(confusion: torch.Tensor) -> float:
    total = int(confusion.sum())
    return int(confusion.diagonal().sum()) / max(total, 1)


METRICS.add(
    "accuracy",
    Metric(lambda e: _accuracy(e.confusion), "maximize", SHARE),
    description="Share of validation images classified correctly.",
)
METRICS.add(
    "balanced_accuracy",
    Metric(lambda e: _mean(_recalls(e.confusion)), "maximize", SHARE),
    description=(
        "Mean per-class recall over the classes with images in the split; "
        "robust to class imbalance."
    ),
)
METRICS.add(
    "macro_f1",
    Metric(lambda e: _mean(_f1s(e.confusion)), "maximize", SHARE),
    description="Unweighted mean per-class F1 over the classes with images in the split.",
)
METRICS.add(
    "worst_class_recall",
    Metric(lambda e: float(min(_recalls(e.confusion), default=math.nan)), "maximize", SHARE),
    description="Recall of the worst class among those with images in the split.",
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
    description=(
        "Inference time of one image on the trial's device (ms): the fastest of up to 10 "
        "timed passes, as other load on the machine only slows passes down."
    ),
)
METRICS.add(
    "batch_latency_ms",
    Metric(lambda e: e.model.batch_latency_ms, "minimize", AMOUNT, above_low=True),
    description=(
        "Inference time of a batch of 256 images on the trial's device (ms), the fastest "
        "of up to 10 timed passes; images larger than 32x32 RGB are measured in a smaller "
        "batch, scaled to 256."
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


class MetricFailedError(RuntimeError):
    """A metric that a study needs raised, or gave no number."""


def compute_metrics(
    evaluation: Evaluation,
    required: Collection[str] = (),
    failures: dict[str, str] | None = None,
) -> dict[str, float]:
    """Computes every registered metric.

    A plugin's metric that raises or gives no real number fails the call only where
    ``required`` names it: one broken metric that no study of it asks for would otherwise
    fail every trial of every study. Elsewhere it is left out, and why goes in
    ``failures`` (name -> message).

    Raises:
        MetricFailedError: If a metric in ``required`` fails (the message names it and
            the package it came from).
    """
    values: dict[str, float] = {}
    for entry in METRICS.entries():
        if entry.source == BUILTIN_SOURCE:
            values[entry.name] = entry.factory.compute(evaluation)
            continue
        try:
            values[entry.name] = _real_number(entry.factory.compute(evaluation))
        except Exception as exc:  # a plugin's code: any failure is its own
            failure = clipped(f"{type(exc).__name__}: {exc}")
            message = f"metric {entry.name!r} ({entry.source}) failed: {failure}"
            if entry.name in required:
                raise MetricFailedError(message) from exc
            if failures is not None:
                failures[entry.name] = message
    return values


def _real_number(value: object) -> float:
    """``value`` as a float: a real number or a tensor of one element.

    Raises:
        TypeError: If it is neither (a bool, a string, a tensor of several values).
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"gave {type(value).__name__} {clipped(repr(value), 60)}, not a number")
    return float(value)


def per_class_report(
    confusion: torch.Tensor, classes: tuple[str, ...]
) -> list[dict[str, float | str | int | None]]:
    """Precision, recall, F1 and support of each class.

    A class with no images in the split (support 0) has no recall and no F1 (None, as the
    study's metrics leave it out, rather than a 0 that reads as a class never recognized);
    its precision is 0 if the model predicted it for other images, else None.
    """
    true_pos = confusion.diagonal().double()
    predicted = confusion.sum(dim=0).double()
    support = confusion.sum(dim=1).double()
    precision = true_pos / predicted.clamp(min=1)
    recall = true_pos / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    rows: list[dict[str, float | str | int | None]] = []
    for i, name in enumerate(classes):
        present = bool(support[i] > 0)
        rows.append(
            {
                "class": name,
                "precision": round(float(precision[i]), 6) if present or predicted[i] > 0 else None,
                "recall": round(float(recall[i]), 6) if present else None,
                "f1": round(float(f1[i]), 6) if present else None,
                "support": int(support[i]),
            }
        )
    return rows
