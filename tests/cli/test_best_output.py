"""``automl best`` output: validation and test metrics side by side."""

from __future__ import annotations

from typing import Any

from automl.cli.output import best_text
from automl.store import BestTrials, EvaluationState, TestEvaluation, TrialDetail


def _best(evaluation: TestEvaluation | None, **trial: Any) -> BestTrials:
    detail = TrialDetail(
        number=3,
        state="complete",
        params={"lr": 0.01},
        values=[0.95],
        intermediate_values={},
        metrics={"accuracy": 0.95, "loss": 0.2},
        **trial,
    )
    return BestTrials(
        study_id=7,
        directions=["maximize"],
        metrics=["accuracy"],
        trials=[detail],
        test_evaluation=evaluation,
    )


def test_test_metrics_print_beside_the_validation_metrics() -> None:
    done = TestEvaluation(state=EvaluationState.DONE, trials=[3])
    text = best_text(_best(done, test_metrics={"accuracy": 0.9, "loss": 0.3}))
    lines = text.splitlines()
    assert lines[0] == "best trial #3 of study 7: accuracy=0.95"
    header = next(line for line in lines if line.startswith("METRIC"))
    assert header.split() == ["METRIC", "VALIDATION", "TEST"]
    assert [line.split() for line in lines if line.startswith(("accuracy", "loss"))] == [
        ["accuracy", "0.95", "0.9"],
        ["loss", "0.2", "0.3"],
    ]
    assert "test split" not in text


def test_without_test_metrics_the_evaluation_state_is_shown() -> None:
    skipped = TestEvaluation(
        state=EvaluationState.SKIPPED, note="dataset 'digits' has no test split"
    )
    text = best_text(_best(skipped))
    assert next(line for line in text.splitlines() if line.startswith("METRIC")).split() == [
        "METRIC",
        "VALUE",
    ]
    assert text.endswith("test split: skipped: dataset 'digits' has no test split")
    assert "test split" not in best_text(_best(None))
