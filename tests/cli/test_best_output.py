"""``automl best`` and ``automl trials ID NUMBER`` output: validation and test metrics side
by side, per-class reports and notes."""

from __future__ import annotations

from typing import Any

from automl.cli.output import best_text, selection_text, trial_text
from automl.store import (
    BestTrials,
    EvaluationState,
    RefitState,
    RefitView,
    TestEvaluation,
    TrialDetail,
)


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


def test_test_metrics_of_an_earlier_evaluation_are_labelled_as_such() -> None:
    """Found by a tester: a resumed study whose data changed showed the earlier test
    metrics in a TEST column above "test split: failed: ... test metrics not computed"."""
    failed = TestEvaluation(state=EvaluationState.FAILED, note="DataChangedError: changed")

    text = best_text(_best(failed, test_metrics={"accuracy": 0.9, "loss": 0.3}))

    header = next(line for line in text.splitlines() if line.startswith("METRIC"))
    assert header.split() == ["METRIC", "VALIDATION", "EARLIER", "TEST"]
    assert text.endswith(
        "test split: failed: DataChangedError: changed "
        "(EARLIER TEST: from the evaluation before the study was resumed)"
    )


def test_a_done_refit_shows_its_own_per_class_report() -> None:
    """Found by a tester: the refit serves, but only ``--json`` had its per-class report."""
    per_class = [{"class": "cat", "precision": 1.0, "recall": 0.75, "f1": 0.86, "support": 4}]
    best = _best(None).model_copy(
        update={
            "refit": RefitView(
                state=RefitState.DONE,
                trial=3,
                epochs=5,
                test_metrics={"accuracy": 0.8},
                test_per_class=per_class,
            )
        }
    )
    queued = best.model_copy(update={"refit": RefitView(state=RefitState.QUEUED)})

    text = best_text(best)

    assert "refit on train + validation: done: trial 3, 5 epochs, test accuracy 0.8000" in text
    tail = text[text.index("refit, test split, per class:") :].splitlines()
    assert tail[1].split() == ["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"]
    assert tail[3].split() == ["cat", "1", "0.75", "0.86", "4"]
    assert best_text(queued).endswith("refit on train + validation: queued")


def test_a_done_refit_shows_the_studys_objectives_on_the_test_split() -> None:
    """Found by a tester: a study maximizing balanced accuracy on imbalanced data showed
    only its refit's test accuracy."""
    refit = RefitView(
        state=RefitState.DONE,
        trial=3,
        epochs=2,
        test_metrics={"accuracy": 0.475, "balanced_accuracy": 0.5167, "params": 24586.0},
    )
    best = _best(None).model_copy(
        update={"metrics": ["balanced_accuracy", "params", "latency_ms"], "refit": refit}
    )

    text = best_text(best)

    assert (
        "refit on train + validation: done: trial 3, 2 epochs, test accuracy 0.4750, "
        "balanced_accuracy 0.5167, params 24586"
    ) in text


def test_a_pareto_front_is_headed_as_such() -> None:
    """Found by a tester: two "best trial" blocks, with nothing saying they were the
    front of a study with two objectives."""
    best = _best(None).model_copy(
        update={"metrics": ["accuracy", "latency_ms"], "directions": ["maximize", "minimize"]}
    )
    best.trials[0].values = [0.95, 1.5]
    best.count = 1

    text = best_text(best)

    assert text.splitlines()[:3] == [
        "Pareto front of study 7: 1 trial (accuracy (maximize), latency_ms (minimize))",
        "",
        "Pareto trial #3 of study 7: accuracy=0.95, latency_ms=1.5",
    ]
    assert not best_text(_best(None)).startswith("Pareto")


def test_the_best_trials_notes_are_shown() -> None:
    """Found by a tester: ``worst_class_recall`` left out a class with no validation
    images, and only the API said so."""
    text = best_text(_best(None, notes={"no_validation_images": ["c9"], "gan_samples": 200}))

    assert text.endswith('notes:\n  gan_samples: 200\n  no_validation_images: ["c9"]')


def test_one_trial_in_full_has_its_per_class_reports_mistakes_and_notes() -> None:
    row = {"class": "cat", "precision": 0.5, "recall": None, "f1": None, "support": 0}
    trial = TrialDetail(
        number=4,
        state="fail",
        params={"lr": 0.01},
        values=None,
        intermediate_values={},
        metrics={"accuracy": 0.9},
        failure="error",
        error="boom\nat line 2",
        best_epoch=2,
        per_class=[row, row | {"class": "\x1b[31mdog", "recall": 1.0, "support": 3}],
        most_confused=[{"true": "dog", "predicted": "cat", "count": 2}],
        test_per_class=[row],
        notes={"batch_size": "cut from 64 to 20", "\x1b[2J": 1},
    )

    text = trial_text(trial, 7, ["accuracy"])

    blocks = text.split("\n\n")
    assert blocks[0].splitlines() == [
        "trial #4 of study 7: fail",
        "failed: error",
        "  boom",
        "  at line 2",
        "weights of epoch 2 (not kept)",
    ]
    assert blocks[3].splitlines()[0] == "validation split, per class:"
    assert [line.split() for line in blocks[3].splitlines()[3:]] == [
        ["cat", "0.5", "-", "-", "0"],
        ["\\x1b[31mdog", "0.5", "1", "-", "3"],
    ]
    assert blocks[4] == "validation split, most frequent mistakes: dog as cat (2)"
    assert blocks[5].startswith("test split, per class:")
    assert blocks[6] == "notes:\n  \\x1b[2J: 1\n  batch_size: cut from 64 to 20"
    many = trial.model_copy(update={"per_class": [row] * 60, "test_per_class": None})
    assert trial_text(many, 7, ["accuracy"]).count("\ncat ") == 50
    assert "(10 more classes: --json lists them)" in trial_text(many, 7, ["accuracy"])


def test_why_a_bundle_serves_is_named_only_where_its_card_says() -> None:
    """A card from an older server has no selection, or another server's a value that is
    no name: neither is read as "best trial"."""
    assert selection_text("pareto_front_first") == "first of the Pareto front"
    assert selection_text("chosen") == "asked for by number"
    assert [selection_text(value) for value in (None, "", 5, ["x"])] == ["", "", "", ""]
    assert selection_text("new\x1b[2J") == "new\\x1b[2J"
