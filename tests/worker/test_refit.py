"""Workers refit an ended study's best configuration on train + validation, reproducibly."""

from __future__ import annotations

from collections.abc import Callable

import torch

from automl.data import load_dataset
from automl.spec import StudySpec
from automl.store import RefitLease, RefitState, Store, best_trials, submit_study
from automl.store.artifacts import read_state_dict
from automl.worker import SqlCoordinator, Worker, WorkerOptions
from automl.worker.refitter import refit, train_plus_validation

SpecFactory = Callable[..., StudySpec]
TEST_SPLIT = {"source": "digits", "options": {"test_fraction": 0.2}}


def _run(store: Store, study_id: int) -> None:
    options = WorkerOptions(
        device="cpu", study_id=study_id, exit_when_idle=True, reap_interval=None
    )
    Worker(store, options).run()


def test_train_plus_validation_keeps_the_normalization_and_the_test_split() -> None:
    data = load_dataset("digits", TEST_SPLIT["options"])
    merged = train_plus_validation(data)
    assert len(merged.train_y) == len(data.train_y) + len(data.val_y)
    assert torch.equal(merged.train_x[len(data.train_y) :], data.val_x)
    assert merged.val_y is data.test_y and merged.test_y is data.test_y
    assert torch.equal(merged.mean, data.mean) and torch.equal(merged.std, data.std)
    assert merged.fingerprint != data.fingerprint


def test_a_refit_is_reproducible_for_its_seed(sqlite_store: Store, tiny_spec: SpecFactory) -> None:
    spec = tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1, "max_failed": 0})
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    coordinator = SqlCoordinator(sqlite_store)
    lease = RefitLease(study_id, "w1", 1, 0)  # refit() itself checks no claim

    weights = []
    for _ in range(2):
        written: list[str] = []
        state, result, _ = refit(coordinator, lease, "cpu", written)
        assert state == RefitState.DONE and result is not None
        assert written == [result.weights, result.card]
        with sqlite_store.artifacts.open_reader(result.weights) as reader:
            weights.append(read_state_dict(reader.read()))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_dataset_without_test_split_fails_the_refit_with_a_reason(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, refit=True)
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    refit_view = best_trials(sqlite_store, study_id).refit
    assert refit_view is not None and refit_view.state == RefitState.FAILED
    assert refit_view.note == "dataset 'digits' has no test split to score a refit on"
