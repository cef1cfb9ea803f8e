"""Which trial serves a study's predictions, and what choosing it costs, on each backend."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from automl.delivery import inference
from automl.delivery.inference import serving_trial
from automl.spec import StudySpec
from automl.store import (
    NoBestTrialError,
    RefitResult,
    RefitState,
    Store,
    StudyNotFoundError,
    StudyStatus,
    attrs,
    claim_refit,
    end_study_if_done,
    finish_refit,
    get_frozen_trial,
    optuna_rows,
    queue_refit,
    resume_study,
    submit_study,
    tables,
)
from automl.store.refits import serving_pick
from automl.store.tables import DELETING
from tests.conftest import recorded_statements
from tests.store.conftest import drive

SpecFactory = Callable[..., StudySpec]


def _refit_of(store: Store, study_id: int, number: int) -> RefitResult:
    """Queues, claims and finishes a refit of trial ``number``, as a worker would."""
    assert queue_refit(store, study_id).state == RefitState.QUEUED
    lease = claim_refit(store, "w1", study_id)
    assert lease is not None and lease.trial_number == number
    store.artifacts.write(f"refit-{number}.safetensors", io.BytesIO(b"x"))
    result = RefitResult(
        trial_number=number,
        epochs=2,
        train_samples=100,
        weights=f"refit-{number}.safetensors",
        card=None,
        test_metrics={"accuracy": 0.75},
        test_per_class=[],
        test_confusion=[[1]],
        test_samples=8,
        duration_s=0.5,
    )
    assert finish_refit(store, lease, RefitState.DONE, result)
    return result


def test_the_best_trial_serves_then_its_refit_until_a_better_trial_comes(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    drive(store, study_id, [0.5, 0.9, 0.7])
    assert end_study_if_done(store, study_id) == StudyStatus.COMPLETED
    serving = serving_trial(store, study_id)
    assert (serving.trial.number, serving.selection, serving.note) == (1, "best_trial", None)
    assert serving.trial == get_frozen_trial(store, study_id, 1)  # the whole trial

    result = _refit_of(store, study_id, 1)
    serving = serving_trial(store, study_id)
    assert (serving.trial.number, serving.selection) == (1, "refit")
    assert serving.trial.user_attrs[attrs.WEIGHTS] == result.weights
    assert (
        serving.note
        == "trial 1's configuration retrained on train + validation for 2 epochs (refit)"
    )

    resume_study(store, study_id, add_trials=2)
    drive(store, study_id, [0.9])  # ties trial 1, which came first: the refit still serves
    assert serving_trial(store, study_id).selection == "refit"
    drive(store, study_id, [0.95])  # better: trial 4's own weights serve
    serving = serving_trial(store, study_id)
    assert (serving.trial.number, serving.selection) == (4, "best_trial")


def test_no_study_and_no_best_trial_are_refused_as_before(
    store: Store, tiny_spec: SpecFactory
) -> None:
    with pytest.raises(StudyNotFoundError):
        serving_trial(store, 999)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    with pytest.raises(NoBestTrialError):
        serving_trial(store, study_id)
    drive(store, study_id, [0.5])
    assert serving_trial(store, study_id).trial.number == 0
    with store.write() as connection:  # a deletion under way hides the study
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=DELETING)
        )
    assert serving_pick(store, study_id) is None
    with pytest.raises(StudyNotFoundError):
        serving_trial(store, study_id)


def test_a_study_deleted_between_the_pick_and_the_trial_is_not_found(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    drive(store, study_id, [0.5])
    picked = serving_pick(store, study_id)
    assert picked is not None

    def pick_then_delete(store: Store, study_id: int) -> object:
        with store.write() as connection:  # what a DELETE finishing meanwhile leaves
            optuna_rows.delete_study(connection, study_id)
        return picked

    monkeypatch.setattr(inference, "serving_pick", pick_then_delete)
    with pytest.raises(StudyNotFoundError):
        serving_trial(store, study_id)


def _statements(store: Store) -> AbstractContextManager[list[str]]:
    """The SQL statements run on the store's engines meanwhile."""
    return recorded_statements(store.engine, store.read_engine)


def test_a_single_objective_request_reads_two_statements_and_the_trial(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 20, "max_failed": 0})).id
    drive(store, study_id, [0.1 * (i % 7) for i in range(20)])
    pick = serving_pick(store, study_id)
    assert pick is not None and (pick.number, pick.refit) == (6, None)
    with _statements(store) as picking:
        serving_pick(store, study_id)
    with _statements(store) as loading:
        store.reader.get_trial(pick.trial_id)
    with _statements(store) as serving:
        assert serving_trial(store, study_id).trial.number == 6
    assert len(serving) == len(picking) + len(loading)
    assert len([s for s in picking if s.lstrip().upper().startswith("SELECT")]) == 2
