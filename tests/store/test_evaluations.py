"""The test-split evaluation of a completed study: requested once per completion, claimed
by exactly one worker, stored all or nothing, on each backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from automl.spec import StudySpec, validate_spec
from automl.store import (
    EvaluationLease,
    EvaluationState,
    Store,
    StudyStatus,
    TrialTestReport,
    attrs,
    beat_evaluation,
    best_trials,
    claim_evaluation,
    delete_study,
    end_due_studies,
    end_study_if_done,
    finish_evaluation,
    resume_study,
    submit_study,
    tables,
)
from automl.store.evaluations import MAX_TRIES
from tests.conftest import tiny_spec_data
from tests.store.conftest import drive

SpecFactory = Callable[..., StudySpec]


def _report(store: Store, study_id: int, number: int, accuracy: float) -> TrialTestReport:
    trial_id = store.storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return TrialTestReport(
        trial_id=trial_id,
        number=number,
        metrics={"accuracy": accuracy, "loss": 0.25},
        per_class=[{"class": "0", "precision": 1.0, "recall": accuracy, "f1": 0.9, "support": 4}],
        confusion=[[3, 1], [0, 4]],
        samples=8,
    )


def _completed(store: Store, spec: StudySpec, outcomes: list) -> int:  # type: ignore[type-arg]
    study_id = submit_study(store, spec).id
    drive(store, study_id, outcomes)
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    return study_id


def _state(store: Store, study_id: int) -> str | None:
    with store.read() as connection:
        return connection.scalar(
            sa.select(tables.evaluations.c.state).where(tables.evaluations.c.study_id == study_id)
        )


def test_a_completed_study_is_evaluated_once_and_stored_on_its_best_trial(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0})
    study_id = submit_study(store, spec).id
    drive(store, study_id, [0.5, 0.9])
    assert claim_evaluation(store, "w1") is None  # not completed yet: nothing is due
    drive(store, study_id, [0.7])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    assert best_trials(store, study_id).test_evaluation.state == EvaluationState.PENDING  # type: ignore[union-attr]

    lease = claim_evaluation(store, "w1")
    assert lease is not None
    assert (lease.study_id, lease.trials, lease.attempt) == (study_id, (1,), 1)
    assert claim_evaluation(store, "w2") is None  # claimed: nobody else gets it
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED  # no second request
    assert claim_evaluation(store, "w2") is None

    report = _report(store, study_id, 1, accuracy=0.875)
    assert finish_evaluation(store, lease, EvaluationState.DONE, [report])
    assert finish_evaluation(store, lease, EvaluationState.DONE, [report])  # a repeat is fine
    assert claim_evaluation(store, "w2") is None

    best = best_trials(store, study_id)
    [trial] = best.trials
    assert trial.number == 1
    assert trial.values == [0.9]  # validation still decides the best trial
    assert trial.test_metrics == {"accuracy": 0.875, "loss": 0.25}
    assert trial.test_per_class == report.per_class
    assert trial.test_confusion == [[3, 1], [0, 4]]
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE
    assert best.test_evaluation.trials == [1]
    assert best.test_evaluation.finished_at is not None
    others = store.storage.get_all_trials(study_id)
    assert [attrs.TEST_METRICS in t.user_attrs for t in others] == [False, True, False]
    mirror = store.storage.get_study_user_attrs(study_id)[attrs.TEST_EVALUATION]
    assert (mirror["state"], mirror["trials"]) == ("done", [1])


def test_racing_workers_claim_an_evaluation_exactly_once(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    barrier = threading.Barrier(8)

    def race(worker: str) -> EvaluationLease | None:
        barrier.wait()
        return claim_evaluation(store, worker)

    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(race, [f"w{i}" for i in range(8)]))
    won = [lease for lease in leases if lease is not None]
    assert len(won) == 1 and won[0].study_id == study_id
    assert _state(store, study_id) == EvaluationState.RUNNING


def test_the_pareto_front_is_evaluated_with_several_objectives(store: Store) -> None:
    data = tiny_spec_data(budget={"n_trials": 3, "max_failed": 0})
    del data["objective"]
    data["objectives"] = [{"metric": "accuracy"}, {"metric": "params"}]
    study_id = _completed(store, validate_spec(data), [(0.9, 100.0), (0.8, 50.0), (0.7, 200.0)])

    lease = claim_evaluation(store, "w1", study_id)
    assert lease is not None and lease.trials == (0, 1)  # trial 2 is dominated by trial 0
    reports = [_report(store, study_id, n, a) for n, a in ((0, 0.85), (1, 0.75))]
    assert finish_evaluation(store, lease, EvaluationState.DONE, reports)
    front = best_trials(store, study_id).trials
    assert [(t.number, t.test_metrics["accuracy"]) for t in front] == [(0, 0.85), (1, 0.75)]  # type: ignore[index]


def test_a_stale_claim_is_taken_over_and_its_late_result_refused(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    first = claim_evaluation(store, "w1")
    assert first is not None
    assert claim_evaluation(store, "w2") is None  # fresh: not taken over
    second = claim_evaluation(store, "w2", stale_after=-1.0)
    assert second is not None and second.attempt == first.attempt + 1

    late = _report(store, study_id, 0, accuracy=0.1)
    assert not finish_evaluation(store, first, EvaluationState.DONE, [late])
    assert not finish_evaluation(store, first, EvaluationState.FAILED, note="boom")
    assert finish_evaluation(
        store, second, EvaluationState.DONE, [_report(store, study_id, 0, 0.6)]
    )
    [trial] = best_trials(store, study_id).trials
    assert trial.test_metrics == {"accuracy": 0.6, "loss": 0.25}


def _age_claim(store: Store, study_id: int, seconds: float) -> None:
    evaluations = tables.evaluations
    with store.write() as connection:
        connection.execute(
            evaluations.update()
            .where(evaluations.c.study_id == study_id)
            .values(claimed_at=evaluations.c.claimed_at - seconds)
        )


def test_a_beaten_claim_stays_its_workers_until_the_beats_stop(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    first = claim_evaluation(store, "w1")
    assert first is not None

    _age_claim(store, study_id, 1000)
    assert beat_evaluation(store, first)
    assert claim_evaluation(store, "w2", stale_after=500) is None  # renewed just now

    _age_claim(store, study_id, 1000)  # the beats stopped (w1 died)
    second = claim_evaluation(store, "w2", stale_after=500)
    assert second is not None and second.attempt == first.attempt + 1
    assert not beat_evaluation(store, first)  # w1 learns it lost the claim
    assert beat_evaluation(store, second)


def test_claims_that_never_report_back_end_failed(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    for n in range(MAX_TRIES):
        assert claim_evaluation(store, f"w{n}", stale_after=-1.0) is not None
    assert claim_evaluation(store, "last", stale_after=-1.0) is None
    evaluation = best_trials(store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.FAILED
    assert evaluation.note == f"abandoned: {MAX_TRIES} claims ended without a result"
    assert claim_evaluation(store, "later", stale_after=-1.0) is None


def test_skipped_and_failed_evaluations_store_no_metrics(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    lease = claim_evaluation(store, "w1")
    assert lease is not None
    note = "dataset 'digits' has no test split"
    assert finish_evaluation(store, lease, EvaluationState.SKIPPED, note=note)
    best = best_trials(store, study_id)
    assert best.trials[0].test_metrics is None
    assert best.test_evaluation is not None
    assert (best.test_evaluation.state, best.test_evaluation.note) == ("skipped", note)
    with pytest.raises(ValueError, match="does not end"):
        finish_evaluation(store, lease, EvaluationState.RUNNING)


def test_each_completion_asks_again_and_supersedes_an_older_claim(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _completed(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}), [0.5])
    old = claim_evaluation(store, "w1")
    assert old is not None and old.trials == (0,)
    resume_study(store, study_id, add_trials=1)
    assert claim_evaluation(store, "w2", stale_after=-1.0) is None  # active again: not due
    drive(store, study_id, [0.8])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED

    assert not finish_evaluation(store, old, EvaluationState.DONE, [_report(store, study_id, 0, 1)])
    new = claim_evaluation(store, "w2")
    assert new is not None and new.trials == (1,) and new.attempt == old.attempt + 1
    assert finish_evaluation(store, new, EvaluationState.DONE, [_report(store, study_id, 1, 0.7)])
    trials = store.storage.get_all_trials(study_id)
    assert [attrs.TEST_METRICS in t.user_attrs for t in trials] == [False, True]


def test_completion_by_the_settle_pass_is_due_too_and_deletion_removes_it(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    drive(store, study_id, [0.5])
    assert end_due_studies(store) == [study_id]  # what the reaper and idle workers run
    assert claim_evaluation(store, "w1", study_id + 1) is None  # another study's only
    lease = claim_evaluation(store, "w1", study_id)
    assert lease is not None
    delete_study(store, study_id)
    assert _state(store, study_id) is None
    assert not finish_evaluation(store, lease, EvaluationState.DONE, [])


def test_cancelled_and_failed_studies_are_not_evaluated(
    store: Store, tiny_spec: SpecFactory
) -> None:
    failed = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    drive(store, failed, [0.5])
    drive(store, failed, [TrialState.FAIL])
    assert end_study_if_done(store, failed) == StudyStatus.FAILED
    assert _state(store, failed) is None
    assert claim_evaluation(store, "w1") is None
