"""Metrics as computed, and confusion matrices as they are kept (``automl.train.metrics``)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
import torch

from automl.registry import Entry as RegistryEntry
from automl.registry import EntryOptions
from automl.train.metrics import (
    DENSE_CONFUSION_CLASSES,
    METRICS,
    Evaluation,
    Metric,
    MetricFailedError,
    compute_metrics,
    dense_confusion,
    most_confused,
)
from automl.train.model_stats import ModelStats


def test_the_most_frequent_mistakes_come_first_and_right_answers_never() -> None:
    matrix = torch.tensor([[9, 2, 0], [0, 8, 4], [1, 2, 7]])
    assert most_confused(matrix, ("a", "b", "c")) == [
        {"true": "b", "predicted": "c", "count": 4},
        {"true": "a", "predicted": "b", "count": 2},  # tied: in row-major order
        {"true": "c", "predicted": "b", "count": 2},
        {"true": "c", "predicted": "a", "count": 1},
    ]
    assert most_confused(matrix, ("a", "b", "c"), limit=1) == [
        {"true": "b", "predicted": "c", "count": 4}
    ]
    assert most_confused(torch.eye(3, dtype=torch.int64) * 5, ("a", "b", "c")) == []


def test_past_the_dense_limit_only_the_most_frequent_mistakes_are_kept() -> None:
    """A 1,000-class matrix was 3 MB of JSON per trial, held by every worker."""
    small = torch.ones(DENSE_CONFUSION_CLASSES, DENSE_CONFUSION_CLASSES, dtype=torch.int64)
    assert dense_confusion(small) == small.tolist()

    size = 1000
    classes = tuple(f"class-{i}" for i in range(size))
    large = torch.diag(torch.full((size,), 3, dtype=torch.int64))
    for true in range(150):  # 150 distinct mistakes, one of them frequent
        large[true, (true + 1) % size] = 1
    large[500, 7] = 6
    assert dense_confusion(large) is None
    kept = most_confused(large, classes)
    assert len(kept) == 100
    assert kept[0] == {"true": "class-500", "predicted": "class-7", "count": 6}
    assert all(m["count"] == 1 for m in kept[1:])
    assert kept[1] == {"true": "class-0", "predicted": "class-1", "count": 1}


def test_equal_shares_from_different_counts_are_equal_and_exact() -> None:
    """Found by a tester: mean recalls of exactly 14/15 from 30 and 60 validation images
    were 0.93333334 and 0.93333340 in float32, so the later trial of the tie ranked first
    (the rule: the earlier one). Shares are exact fractions of the counts, rounded once."""
    stats = ModelStats(1, 1.0, 1.0)
    small = torch.tensor([[9, 1, 0], [0, 10, 0], [0, 1, 9]])
    large = torch.tensor([[19, 1, 0], [0, 20, 0], [0, 3, 17]])

    def share(name: str, confusion: torch.Tensor) -> float:
        return METRICS.get(name).factory.compute(Evaluation(confusion, 0.0, stats))

    assert share("balanced_accuracy", small) == share("balanced_accuracy", large) == 14 / 15
    assert share("accuracy", small) == 28 / 30
    assert share("accuracy", torch.tensor([[351, 9], [0, 0]])) == 0.975  # not 0.97500002
    assert share("worst_class_recall", large) == 17 / 20
    assert share("macro_f1", small) == float((Fraction(18, 19) * 2 + Fraction(20, 22)) / 3)
    # Rounded once: a float sum of these recalls gives 0.9333333333333332.
    assert sum([0.9, 1.0, 0.9]) / 3 != 14 / 15


def plugin_metrics(
    monkeypatch: pytest.MonkeyPatch, computes: dict[str, Callable[[Evaluation], object]]
) -> None:
    """Registers ``computes`` as a plugin's metrics (package ``acme``) for one test."""
    entries = dict(METRICS._entries)
    for name, compute in computes.items():
        metric = Metric(compute, "maximize")  # type: ignore[arg-type]
        entries[name] = RegistryEntry(name, metric, EntryOptions, "A plugin's.", "acme")
    monkeypatch.setattr(METRICS, "_entries", entries)


def some_evaluation() -> Evaluation:
    stats = ModelStats(params=10, latency_ms=1.0, batch_latency_ms=2.0)
    return Evaluation(torch.tensor([[3, 1], [0, 4]]), 0.5, stats)


def test_a_failing_plugin_metric_is_left_out_unless_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a plugin author: one broken metric failed every trial of every study, as
    each epoch computes every registered metric."""
    plugin_metrics(
        monkeypatch,
        {
            "broken": lambda e: 1 / 0,
            "wordy": lambda e: "high",
            "as_tensor": lambda e: torch.tensor(0.25),
            "as_int": lambda e: 3,
        },
    )
    failures: dict[str, str] = {}

    values = compute_metrics(some_evaluation(), ("accuracy",), failures)

    assert values["accuracy"] == 0.875 and "broken" not in values and "wordy" not in values
    assert values["as_tensor"] == 0.25 and values["as_int"] == 3.0
    assert failures == {
        "broken": "metric 'broken' (acme) failed: ZeroDivisionError: division by zero",
        "wordy": "metric 'wordy' (acme) failed: TypeError: gave str 'high', not a number",
    }
    with pytest.raises(MetricFailedError, match=r"^metric 'broken' \(acme\) failed: Zero"):
        compute_metrics(some_evaluation(), ("accuracy", "broken"))
