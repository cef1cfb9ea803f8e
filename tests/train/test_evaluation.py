"""Scoring trained weights on the test split."""

from __future__ import annotations

from dataclasses import replace

import pytest

from automl.data import load_dataset
from automl.train import train
from automl.train.evaluation import NoSplitError, evaluate_weights
from automl.train.hyperparameters import flat_config


def test_test_split_metrics_of_trained_weights() -> None:
    full = load_dataset("digits")
    # Hold out the validation images as a test split too, so both scores must agree.
    data = replace(full, test_x=full.val_x, test_y=full.val_y)
    config = flat_config({"epochs": 2, "width": 8, "depth": 1})
    result = train(config, data=data)
    report = evaluate_weights(config, result.state_dict, data=data)
    assert report.split == "test" and report.samples == len(full.val_y)
    timings = {"latency_ms", "batch_latency_ms"}  # measured anew, so they differ
    scores = {name: value for name, value in report.metrics.items() if name not in timings}
    assert scores == pytest.approx({k: result.metrics[k] for k in scores})
    assert set(report.metrics) == set(result.metrics)
    assert [row["class"] for row in report.per_class] == list(full.classes)
    assert sum(map(sum, report.confusion)) == len(full.val_y)


def test_a_dataset_without_test_split_says_so() -> None:
    data = load_dataset("digits")
    config = flat_config({"epochs": 1, "width": 8, "depth": 1})
    result = train(config, data=data)
    with pytest.raises(NoSplitError, match="has no test split"):
        evaluate_weights(config, result.state_dict, data=data)
