"""The database coordinator's end of a trial: settle, and retention when it is due."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
import torch
from optuna.trial import TrialState

import automl.store.leases
from automl.spec import StudySpec
from automl.store import (
    FailureKind,
    Lease,
    LeaseLostError,
    Store,
    StudyStatus,
    attrs,
    get_study,
    release,
    running_trial_template,
    save_weights,
    submit_study,
)
from automl.worker.coordinator import SqlCoordinator
from tests.store.conftest import complete_trial, start_trial

SpecFactory = Callable[..., StudySpec]


def _complete_with_weights(store: Store, value: float) -> tuple[Lease, int]:
    lease, trial_id = start_trial(store)
    study = optuna.load_study(
        study_name=store.storage.get_study_name_from_id(lease.study_id), storage=store.storage
    )
    trial = optuna.Trial(study, trial_id)
    save_weights(store.storage, trial, {"w": torch.zeros(2)}, store.artifacts)
    complete_trial(store.storage, trial_id, [value])
    return lease, trial_id


def test_the_study_end_runs_the_retention_pass_a_skipped_trial_left_due(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A trial settled without retention (it was not expected to enter the kept set) still
    loses weights it should not hold once the study ends."""
    spec = tiny_spec(budget={"n_trials": 2, "max_failed": 0}, keep_weights=1)
    study_id = submit_study(store, spec).id
    coordinator = SqlCoordinator(store)
    best, best_id = _complete_with_weights(store, 0.9)
    assert coordinator.finish_and_settle(best, "complete", None, retain=True)
    worse, worse_id = _complete_with_weights(store, 0.5)
    assert store.storage.get_trial(worse_id).user_attrs.get(attrs.WEIGHTS)

    assert coordinator.finish_and_settle(worse, "complete", None, retain=False)

    assert get_study(store, study_id).status == StudyStatus.COMPLETED
    assert attrs.WEIGHTS not in store.storage.get_trial(worse_id).user_attrs
    assert store.storage.get_trial(worse_id).user_attrs[attrs.WEIGHTS_REMOVED]
    assert store.storage.get_trial(best_id).user_attrs.get(attrs.WEIGHTS)


def test_a_trial_started_for_a_lost_lease_is_failed_not_left_running(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """The plain coordinator creates through Optuna's storage, then links: a lease lost in
    between must not leave a RUNNING trial that no ticket names."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 1})).id
    coordinator = SqlCoordinator(store)
    lease = coordinator.claim("w1", study_id)
    assert lease is not None
    release(store, lease, FailureKind.INTERRUPTED, "stopping")
    with pytest.raises(LeaseLostError):
        coordinator.start_trial(lease, running_trial_template({attrs.LEASE: lease.key}))
    [trial] = store.storage.get_all_trials(study_id)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[attrs.FAILURE] == FailureKind.WORKER_LOST.value


def test_a_settle_that_fails_for_good_still_ends_the_ticket(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    coordinator = SqlCoordinator(store)
    lease, _ = _complete_with_weights(store, 0.9)

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in settling")

    monkeypatch.setattr(automl.store.leases, "end_if_done_locked", broken)
    assert coordinator.finish_and_settle(lease, "complete", None, retain=False) is False
    assert not coordinator.heartbeat(lease).held  # the ticket ended all the same
    monkeypatch.undo()
    assert coordinator.end_if_done(study_id) == StudyStatus.COMPLETED  # the usual settle


def test_a_checkpoint_the_folder_will_not_let_go_of_is_left_not_a_crash(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Once an artifact folder turned read-only mid-trial crashed the worker, with a
    traceback, after the trial had ended: removing its last checkpoint raised."""
    submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}))
    coordinator = SqlCoordinator(sqlite_store)
    lease, _ = _complete_with_weights(sqlite_store, 0.9)
    coordinator.save_checkpoint(lease, b"epoch 1", 1)
    [checkpoint] = sqlite_store.artifacts.directory.glob("checkpoint-*")
    checkpoint.unlink()
    checkpoint.mkdir()  # unlink now fails (IsADirectoryError), as on a read-only folder
    (checkpoint / "x").touch()

    assert coordinator.finish_and_settle(lease, "complete", None, retain=False)

    assert not coordinator.heartbeat(lease).held
    assert any("could not remove artifact" in r.getMessage() for r in caplog.records)
