"""``GET /studies/{id}/best`` returns test-split metrics beside the validation metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from automl.data import load_dataset
from tests.api.conftest import RunStudy

Submit = Callable[..., dict[str, Any]]


def test_best_returns_test_metrics_separately(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    dataset = {"source": "digits", "options": {"test_fraction": 0.25}}
    study_id = submit(dataset=dataset, budget={"n_trials": 2, "max_failed": 0})["id"]
    before = client.get(f"/studies/{study_id}/best")
    assert before.status_code == 404  # no completed trial yet

    run_study(study_id)
    response = client.get(f"/studies/{study_id}/best")

    assert response.status_code == 200, response.text
    best = response.json()
    evaluation = best["test_evaluation"]
    assert evaluation["state"] == "done" and evaluation["note"] is None
    [trial] = best["trials"]
    assert evaluation["trials"] == [trial["number"]]
    data = load_dataset("digits", {"test_fraction": 0.25})
    assert data.test_y is not None and data.val_y is not None
    n_test, n_val = len(data.test_y), len(data.val_y)
    assert n_test != n_val  # so the two reports below cannot be confused
    validation, test = trial["metrics"], trial["test_metrics"]
    assert set(test) == set(validation)
    assert trial["values"] == [pytest.approx(validation["accuracy"])]
    assert sum(row["support"] for row in trial["per_class"]) == n_val
    assert sum(row["support"] for row in trial["test_per_class"]) == n_test
    assert [row["class"] for row in trial["test_per_class"]] == [str(d) for d in range(10)]
    confusion = trial["test_confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == n_test
    diagonal = sum(confusion[i][i] for i in range(10))
    assert test["accuracy"] == pytest.approx(diagonal / n_test)

    # The trial's own detail carries the same test scores.
    detail = client.get(f"/studies/{study_id}/trials/{trial['number']}").json()
    assert detail["test_metrics"] == test and detail["test_confusion"] == confusion


def test_best_without_test_split_has_null_test_metrics(
    client: TestClient, submit: Submit, run_study: RunStudy
) -> None:
    study_id = submit(budget={"n_trials": 1, "max_failed": 0})["id"]
    run_study(study_id)

    best = client.get(f"/studies/{study_id}/best").json()

    [trial] = best["trials"]
    assert trial["metrics"]["accuracy"] > 0
    assert trial["test_metrics"] is None
    assert trial["test_per_class"] is None and trial["test_confusion"] is None
    assert best["test_evaluation"]["state"] == "skipped"
    assert best["test_evaluation"]["note"] == "dataset 'digits' has no test split"
