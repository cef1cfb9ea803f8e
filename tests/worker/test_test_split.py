"""Workers score a completed study's best trial(s) on the test split, once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import automl.worker.evaluator
from automl.data import load_dataset
from automl.spec import StudySpec, validate_spec
from automl.store import (
    Backoff,
    EvaluationState,
    Store,
    StudyStateError,
    StudyStatus,
    attrs,
    best_trials,
    get_study,
    load_state_dict,
    rerun_failed,
    submit_study,
)
from automl.train import TrialConfig
from automl.train.evaluation import evaluate_weights
from automl.train.metrics import DENSE_CONFUSION_CLASSES, MOST_CONFUSED
from automl.worker import DeviceFaultError, SqlCoordinator, Worker, WorkerOptions
from tests.conftest import tiny_spec_data
from tests.data.conftest import write_class_folder
from tests.worker.options import fast_options

SpecFactory = Callable[..., StudySpec]

TEST_SPLIT = {"source": "digits", "options": {"test_fraction": 0.2}}
TIMINGS = {"latency_ms", "batch_latency_ms"}  # measured anew each time


def _options(**overrides: Any) -> WorkerOptions:
    return fast_options(**overrides)


def test_test_metrics_appear_when_a_study_with_a_test_split_completes(
    store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    spec = tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 2, "max_failed": 0})
    study_id = submit_study(store, spec).id
    with caplog.at_level(logging.INFO, logger="automl.worker"):
        assert Worker(store, _options()).run() == 2
    assert get_study(store, study_id).status == StudyStatus.COMPLETED
    # Found by a tester: a worker that ran only a refit said "stopped after 0 trials".
    [stopped] = [r.getMessage() for r in caplog.records if " stopped after " in r.getMessage()]
    assert stopped.endswith(" stopped after 2 trials and 1 test evaluation")

    best = best_trials(store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE
    [trial] = best.trials
    assert best.test_evaluation.trials == [trial.number]
    data = load_dataset("digits", {"test_fraction": 0.2})
    assert data.test_y is not None
    n_test = len(data.test_y)
    assert trial.test_confusion is not None and trial.test_per_class is not None
    assert sum(map(sum, trial.test_confusion)) == n_test
    assert sum(row["support"] for row in trial.test_per_class) == n_test
    assert sum(row["support"] for row in trial.per_class or []) == len(data.val_y)
    assert trial.test_metrics is not None and trial.metrics is not None
    assert set(trial.test_metrics) == set(trial.metrics)
    accuracy = sum(trial.test_confusion[i][i] for i in range(10)) / n_test
    assert trial.test_metrics["accuracy"] == pytest.approx(accuracy)

    # The stored scores are those of the trial's own weights on the test images.
    frozen = store.storage.get_all_trials(study_id)[trial.number]
    weights = load_state_dict(frozen, store.artifacts)
    config = TrialConfig.model_validate(frozen.user_attrs[attrs.CONFIG])
    again = evaluate_weights(config, weights, data=data)
    assert again.confusion == trial.test_confusion
    scores = {k: v for k, v in trial.test_metrics.items() if k not in TIMINGS}
    assert scores == pytest.approx({k: again.metrics[k] for k in scores})
    # Validation alone decided: the objective is still the validation accuracy.
    assert trial.values == [pytest.approx(trial.metrics["accuracy"])]
    other = [t for t in store.storage.get_all_trials(study_id) if t.number != trial.number]
    assert [attrs.TEST_METRICS in t.user_attrs for t in other] == [False]


def test_past_the_dense_limit_a_trial_keeps_its_most_frequent_mistakes(
    sqlite_store: Store, tiny_spec: SpecFactory, data_root: Path
) -> None:
    """A 1,000-class matrix was 3 MB per trial (and in the test scores and card again),
    held in memory by every worker for every finished trial of the study."""
    classes = DENSE_CONFUSION_CLASSES + 10
    write_class_folder(data_root / "many", {f"k{i:03d}": 4 for i in range(classes)}, size=(6, 6))
    dataset = {
        "source": "image_folder",
        "options": {"path": "many", "size": 6, "val_fraction": 0.25, "test_fraction": 0.25},
    }
    spec = tiny_spec(dataset=dataset, budget={"n_trials": 1, "max_failed": 0})
    study_id = submit_study(sqlite_store, spec).id
    assert Worker(sqlite_store, _options()).run() == 1

    [trial] = best_trials(sqlite_store, study_id).trials
    assert trial.confusion is None and trial.test_confusion is None
    for mistakes, rows in (
        (trial.most_confused, trial.per_class),
        (trial.test_most_confused, trial.test_per_class),
    ):
        assert mistakes and rows and len(mistakes) <= MOST_CONFUSED
        counts = [m["count"] for m in mistakes]
        assert counts == sorted(counts, reverse=True)
        wrong = sum(row["support"] - round(row["recall"] * row["support"]) for row in rows)
        assert sum(m["count"] for m in mistakes) == wrong  # fewer mistakes than the limit
        assert all(m["true"] != m["predicted"] for m in mistakes)
    [frozen] = sqlite_store.storage.get_all_trials(study_id)
    assert attrs.CONFUSION not in frozen.user_attrs
    assert len(json.dumps(frozen.user_attrs[attrs.MOST_CONFUSED])) < 10_000


def test_without_a_test_split_the_evaluation_is_skipped(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1})).id
    assert Worker(sqlite_store, _options()).run() == 1
    best = best_trials(sqlite_store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.SKIPPED
    assert best.test_evaluation.note == "dataset 'digits' has no test split"
    assert best.trials[0].test_metrics is None and best.trials[0].test_confusion is None


def test_a_failing_evaluation_is_recorded_and_the_worker_goes_on(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(automl.worker.evaluator, "evaluate_weights", _explodes)
    first = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1})).id
    second = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1})).id
    assert Worker(sqlite_store, _options()).run() == 2  # kept working after the failure

    evaluation = best_trials(sqlite_store, first).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.FAILED
    assert evaluation.note == "RuntimeError: scoring exploded"
    assert best_trials(sqlite_store, first).trials[0].test_metrics is None
    assert get_study(sqlite_store, second).status == StudyStatus.COMPLETED


def test_a_cuda_error_in_an_evaluation_is_recorded_and_stops_the_worker(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's CUDA context may be unusable after it: the next trial would fail."""

    def faults(*args: Any, **kwargs: Any) -> Any:
        raise torch.AcceleratorError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(automl.worker.evaluator, "evaluate_weights", faults)
    first = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1})).id
    with pytest.raises(DeviceFaultError, match=f"the test evaluation of study {first} left"):
        Worker(sqlite_store, _options()).run()

    evaluation = best_trials(sqlite_store, first).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.FAILED
    assert evaluation.note == "AcceleratorError: CUDA error: device-side assert triggered"


def test_rerun_failed_makes_a_failed_evaluation_due_again(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a failed evaluation stayed failed: no command ran it again (``rerun-failed``
    answered that the study had no failed trials)."""
    monkeypatch.setattr(automl.worker.evaluator, "evaluate_weights", _explodes)
    study_id = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1})).id
    assert Worker(sqlite_store, _options()).run() == 1
    evaluation = best_trials(sqlite_store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.FAILED
    monkeypatch.undo()  # the cause is fixed

    detail = rerun_failed(sqlite_store, study_id)

    assert detail.status == StudyStatus.COMPLETED  # not reopened: its trials are fine
    evaluation = best_trials(sqlite_store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.PENDING
    assert Worker(sqlite_store, _options()).run() == 0
    best = best_trials(sqlite_store, study_id)
    assert best.test_evaluation is not None and best.test_evaluation.state == EvaluationState.DONE
    assert best.trials[0].test_metrics is not None
    # Done now: nothing left to run again.
    with pytest.raises(StudyStateError, match="no failed trials \\(nor a failed test evaluation"):
        rerun_failed(sqlite_store, study_id)


def _explodes(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("scoring exploded")


def test_an_idle_worker_evaluates_a_study_someone_else_completed(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first worker dies (here: never looks) before evaluating, as when the reaper or
    # the API completes a study whose workers are gone.
    study_id = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT)).id
    real = SqlCoordinator.claim_evaluation
    monkeypatch.setattr(SqlCoordinator, "claim_evaluation", lambda self, w, s, left=(): None)
    assert Worker(sqlite_store, _options()).run() == 3
    pending = best_trials(sqlite_store, study_id).test_evaluation
    assert pending is not None and pending.state == EvaluationState.PENDING

    monkeypatch.setattr(SqlCoordinator, "claim_evaluation", real)
    assert Worker(sqlite_store, _options()).run() == 0  # idle: nothing to train
    best = best_trials(sqlite_store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE
    assert best.trials[0].test_metrics is not None
    assert 0.0 < best.trials[0].test_metrics["accuracy"] <= 1.0


def test_an_evaluation_taken_over_stops_scoring_and_stores_nothing(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer: a worker whose claim was taken over scored every trial to the end."""
    study_id = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT)).id
    monkeypatch.setattr(SqlCoordinator, "claim_evaluation", lambda self, w, s, left=(): None)
    assert Worker(sqlite_store, _options()).run() == 3
    monkeypatch.undo()
    coordinator = SqlCoordinator(sqlite_store)
    lease = coordinator.claim_evaluation("w1", study_id)
    assert lease is not None
    monkeypatch.setattr(automl.worker.evaluator, "evaluate_weights", _explodes)

    ended = automl.worker.evaluator.run_evaluation(
        coordinator, lease, "cpu", Backoff(logging.getLogger("t")), lost=lambda: True
    )

    assert ended is None  # nothing scored, nothing stored
    evaluation = best_trials(sqlite_store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.RUNNING


def test_every_trial_of_the_pareto_front_gets_test_metrics(sqlite_store: Store) -> None:
    data = tiny_spec_data(dataset=TEST_SPLIT, budget={"n_trials": 3, "max_failed": 0})
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    data["params"]["width"] = {"type": "int", "low": 4, "high": 16}
    data["fixed"] = {k: v for k, v in data["fixed"].items() if k != "width"}
    study_id = submit_study(sqlite_store, validate_spec(data)).id
    assert Worker(sqlite_store, _options(study_id=study_id)).run() == 3

    best = best_trials(sqlite_store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.trials == [t.number for t in best.trials]
    assert all(t.test_metrics is not None for t in best.trials)
    evaluated = {t.number for t in best.trials}
    for trial in sqlite_store.storage.get_all_trials(study_id):
        assert (attrs.TEST_METRICS in trial.user_attrs) == (trial.number in evaluated)


def test_a_coordinator_that_refuses_evaluation_claims_does_not_stop_training(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(self: SqlCoordinator, worker_id: str, study_id: int | None, left: Any) -> None:
        raise RuntimeError("proxy: UNIMPLEMENTED: claim_evaluation")

    monkeypatch.setattr(SqlCoordinator, "claim_evaluation", refuse)
    study_id = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT)).id
    with caplog.at_level("WARNING", logger="automl.worker"):
        assert Worker(sqlite_store, _options()).run() == 3
    assert get_study(sqlite_store, study_id).status == StudyStatus.COMPLETED
    refused = [r for r in caplog.records if "cannot claim a test evaluation" in r.message]
    assert len(refused) == 1  # said once, not on every pass


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_worker_scores_the_test_split_on_its_device(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1, "max_failed": 0})
    study_id = submit_study(sqlite_store, spec).id
    assert Worker(sqlite_store, _options(device="cuda")).run() == 1
    best = best_trials(sqlite_store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE, best.test_evaluation.note
    [trial] = best.trials
    assert trial.test_confusion is not None and sum(map(sum, trial.test_confusion)) == 359


def test_an_idle_worker_stays_to_take_over_an_evaluation_whose_worker_died(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: ``worker --exit-when-idle`` exited at once beside a test
    evaluation that a killed worker held, and nothing took it over until another worker
    came."""
    study_id = submit_study(sqlite_store, tiny_spec(dataset=TEST_SPLIT)).id
    monkeypatch.setattr(SqlCoordinator, "claim_evaluation", lambda self, w, s, left=(): None)
    assert Worker(sqlite_store, _options()).run() == 3
    monkeypatch.undo()
    assert SqlCoordinator(sqlite_store).claim_evaluation("killed", study_id) is not None
    options = _options(heartbeat_interval=0.1, grace_period=0.5, reap_interval=0.1)

    assert Worker(sqlite_store, options).run() == 0

    evaluation = best_trials(sqlite_store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.DONE
