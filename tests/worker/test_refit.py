"""Workers refit an ended study's best configuration on train + validation, reproducibly."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import pytest
import torch
from optuna.trial import FrozenTrial, create_trial

import automl.worker.refitter
from automl.data import load_dataset
from automl.delivery.card import trial_config
from automl.spec import StudySpec
from automl.store import (
    Backoff,
    RefitLease,
    RefitState,
    Store,
    StudyStateError,
    attrs,
    beat_refit,
    best_trials,
    queue_refit,
    submit_study,
    tables,
)
from automl.store.artifacts import read_state_dict
from automl.store.optuna_rows import put_trial_attrs
from automl.train import train
from automl.train.hyperparameters import flat_config
from automl.worker import DeviceFaultError, SqlCoordinator, Worker, WorkerOptions
from automl.worker.refitter import refit, refit_epochs, run_refit, train_plus_validation

SpecFactory = Callable[..., StudySpec]
TEST_SPLIT = {"source": "digits", "options": {"test_fraction": 0.2}}


def _run(store: Store, study_id: int) -> None:
    options = WorkerOptions(
        device="cpu", study_id=study_id, exit_when_idle=True, reap_interval=None
    )
    Worker(store, options).run()


def _refit_queued(store: Store, tiny_spec: SpecFactory) -> int:
    """A study with a test split, run to its end, whose refit is queued; its id."""
    spec = tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1, "max_failed": 0})
    study_id = submit_study(store, spec).id
    _run(store, study_id)
    queue_refit(store, study_id)
    return study_id


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
        assert result.card is not None
        with sqlite_store.artifacts.open_reader(result.card) as reader:
            scores = json.loads(reader.read())["metrics"]
        # The refit's own mistakes (its stored result keeps none): as its matrix says.
        matrix, mistakes = scores["test_confusion"], scores["test_most_confused"]
        wrong = sum(map(sum, matrix)) - sum(matrix[i][i] for i in range(len(matrix)))
        assert sum(m["count"] for m in mistakes) == wrong  # digits: under 100 of them
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_worker_stopping_mid_refit_gives_it_back_for_the_next_worker(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _refit_queued(sqlite_store, tiny_spec)
    coordinator = SqlCoordinator(sqlite_store)
    lease = coordinator.claim_refit("w1", study_id)
    assert lease is not None

    stopped = run_refit(coordinator, lease, "cpu", Backoff(logging.getLogger("test")), lambda: True)

    assert stopped is None
    refit_view = best_trials(sqlite_store, study_id).refit
    assert refit_view is not None and refit_view.state == RefitState.QUEUED
    # Given back: due at once, not after the grace period.
    assert coordinator.claim_refit("w2", study_id) is not None


def test_a_refit_whose_worker_died_is_taken_over_after_the_grace_period(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = _refit_queued(sqlite_store, tiny_spec)
    assert SqlCoordinator(sqlite_store).claim_refit("killed", study_id) is not None
    refits = tables.refits
    with sqlite_store.write() as connection:  # its last beat was 10 s ago
        connection.execute(refits.update().values(claimed_at=refits.c.claimed_at - 10))

    def worker(grace_period: float, seconds: float) -> RefitState:
        """Runs an idle worker for up to ``seconds``, until the refit is done."""
        options = WorkerOptions(
            device="cpu",
            reap_interval=None,
            poll_interval=0.1,
            heartbeat_interval=1.0,
            grace_period=grace_period,
        )
        running = Worker(sqlite_store, options)
        thread = threading.Thread(target=running.run)
        thread.start()
        deadline = time.monotonic() + seconds
        state = RefitState.RUNNING
        while time.monotonic() < deadline and state != RefitState.DONE:
            time.sleep(0.2)
            state = best_trials(sqlite_store, study_id).refit.state  # type: ignore[union-attr]
        running.stop()
        thread.join(60)
        return state

    # Within its grace period: left to the worker holding it.
    assert worker(grace_period=60.0, seconds=3) == RefitState.RUNNING
    # Past it, and seen so for half of it (the worker did not beat since): taken over.
    assert worker(grace_period=5.0, seconds=60) == RefitState.DONE


def test_a_stale_claim_is_taken_over_only_once_it_stays_stale_for_half_the_grace_period(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    """A reviewer: after a database outage longer than the grace period every running
    claim looked stale, and the first idle worker took over a refit whose worker was
    alive (hours of training lost); its next beat, once the database is back, comes
    within half the grace period."""
    study_id = _refit_queued(sqlite_store, tiny_spec)
    alive = SqlCoordinator(sqlite_store).claim_refit("alive", study_id)
    assert alive is not None
    refits = tables.refits

    def outage() -> None:  # its beats could not land for 10 s
        with sqlite_store.write() as connection:
            connection.execute(refits.update().values(claimed_at=refits.c.claimed_at - 10))

    outage()
    other = SqlCoordinator(sqlite_store, grace_period=1.0)
    assert other.claim_refit("idle", study_id) is None  # first seen stale
    assert beat_refit(sqlite_store, alive)  # the database is back: the live worker beats
    outage()  # (and stays silent again)
    time.sleep(0.6)
    assert other.claim_refit("idle", study_id) is None  # another claim: seen anew
    time.sleep(0.6)
    taken = other.claim_refit("idle", study_id)
    assert taken is not None and taken.attempt == alive.attempt + 1


def test_a_dataset_without_test_split_fails_the_refit_with_a_reason(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    # Refused at submit since; a study stored before, or refit over the API, still asks.
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}).model_copy(update={"refit": True})
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    refit_view = best_trials(sqlite_store, study_id).refit
    assert refit_view is not None and refit_view.state == RefitState.FAILED
    assert refit_view.note == "dataset 'digits' has no test split to score a refit on"
    # Asked again by hand, it is refused up front: the skipped evaluation already says why.
    with pytest.raises(StudyStateError, match="dataset 'digits' has no test split: a refit"):
        queue_refit(sqlite_store, study_id)


def test_a_cuda_error_in_a_refit_is_recorded_and_stops_the_worker(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = _refit_queued(sqlite_store, tiny_spec)

    def faults(*args: object, **kwargs: object) -> None:
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(automl.worker.refitter, "train", faults)
    with pytest.raises(DeviceFaultError, match=f"the refit of study {study_id} left its device"):
        _run(sqlite_store, study_id)
    refit_view = best_trials(sqlite_store, study_id).refit
    assert refit_view is not None and refit_view.state == RefitState.FAILED
    assert refit_view.note is not None and "illegal memory access" in refit_view.note


def test_a_refit_trains_up_to_the_epoch_whose_weights_the_trial_kept() -> None:
    config = flat_config({"epochs": 9})
    history = [{"epoch": epoch, "accuracy": 0.5} for epoch in range(1, 7)]

    def trial(**user_attrs: object) -> FrozenTrial:
        return create_trial(value=0.5, user_attrs={attrs.HISTORY: history, **user_attrs})

    assert refit_epochs(trial(**{attrs.BEST_EPOCH: 4}), config) == 4
    assert refit_epochs(trial(), config) == 6  # trials from before restore_best
    assert refit_epochs(create_trial(value=0.5), config) == 9


def test_a_refit_keeps_the_trials_schedule_and_stops_at_its_kept_epoch(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    fixed = {"epochs": 3, "width": 8, "depth": 1, "batch_size": 128, "scheduler": "cosine"}
    spec = tiny_spec(dataset=TEST_SPLIT, budget={"n_trials": 1, "max_failed": 0}, fixed=fixed)
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    [trial] = sqlite_store.storage.get_all_trials(study_id)
    with sqlite_store.write() as connection:  # as if epoch 2 had been its best
        put_trial_attrs(connection, trial._trial_id, {attrs.BEST_EPOCH: 2})
    written: list[str] = []
    lease = RefitLease(study_id, "w1", 1, 0)
    state, result, _ = refit(SqlCoordinator(sqlite_store), lease, "cpu", written)
    assert state == RefitState.DONE and result is not None and result.epochs == 2
    config = trial_config(trial).model_copy(update={"restore_best": False})
    data = train_plus_validation(load_dataset("digits", TEST_SPLIT["options"]))
    expected = train(config, lambda epoch, _: epoch >= 2, data=data).state_dict  # cosine over 3
    with sqlite_store.artifacts.open_reader(result.weights) as reader:
        refit_weights = read_state_dict(reader.read())
    assert all(torch.equal(refit_weights[name], value) for name, value in expected.items())
