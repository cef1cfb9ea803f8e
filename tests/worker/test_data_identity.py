"""Test scores and refits of a trial see the classes it trained on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from automl.spec import StudySpec
from automl.store import (
    EvaluationLease,
    EvaluationState,
    RefitLease,
    Store,
    best_trials,
    submit_study,
)
from automl.worker import SqlCoordinator, Worker, WorkerOptions
from automl.worker.data_identity import DataChangedError
from automl.worker.evaluator import score
from automl.worker.refitter import refit
from tests.data.conftest import write_class_folder

SpecFactory = Callable[..., StudySpec]


def _folder_spec(tiny_spec: SpecFactory, n_trials: int) -> StudySpec:
    dataset = {
        "source": "image_folder",
        "options": {"path": "pets", "size": 8, "test_fraction": 0.3},
    }
    return tiny_spec(dataset=dataset, budget={"n_trials": n_trials, "max_failed": 0})


def _run(store: Store, study_id: int) -> int:
    options = WorkerOptions(
        device="cpu", study_id=study_id, exit_when_idle=True, reap_interval=None
    )
    return Worker(store, options).run()


def _rename_class(data_root: Path) -> None:
    """Class ``cat`` becomes ``zebra``: the sorted order, so every label index, changes."""
    shutil.move(data_root / "pets" / "cat", data_root / "pets" / "zebra")


@pytest.fixture
def pets(data_root: Path) -> Path:
    write_class_folder(data_root / "pets", {"cat": 10, "dog": 10})
    return data_root


def test_test_metrics_are_not_computed_on_data_the_trial_did_not_train_on(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    study_id = submit_study(sqlite_store, _folder_spec(tiny_spec, 1)).id
    _run(sqlite_store, study_id)
    evaluation = best_trials(sqlite_store, study_id).test_evaluation
    assert evaluation is not None and evaluation.state == EvaluationState.DONE
    lease = EvaluationLease(study_id, "w1", 2, (0,))  # score() itself checks no claim
    coordinator = SqlCoordinator(sqlite_store)
    state, reports, _ = score(coordinator, lease, "cpu")
    assert state == EvaluationState.DONE and len(reports) == 1

    _rename_class(pets)
    with pytest.raises(
        DataChangedError,
        match=r"classes of dataset .image_folder. changed since trial 0 trained \(cat, dog then, "
        r"dog, zebra now\)",
    ) as raised:
        score(coordinator, lease, "cpu")
    assert "test metrics not computed" in str(raised.value)


def test_without_a_test_split_changed_classes_are_no_failure_but_a_skip(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    """There is nothing to score: the classes do not matter (once a failed evaluation)."""
    spec = tiny_spec(
        dataset={"source": "image_folder", "options": {"path": "pets", "size": 8}},
        budget={"n_trials": 1, "max_failed": 0},
    )
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    _rename_class(pets)

    lease = EvaluationLease(study_id, "w1", 2, (0,))
    state, reports, note = score(SqlCoordinator(sqlite_store), lease, "cpu")

    assert (state, reports) == (EvaluationState.SKIPPED, [])
    assert note is not None and "test" in note


def test_a_refit_refuses_data_the_trial_did_not_train_on(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    study_id = submit_study(sqlite_store, _folder_spec(tiny_spec, 1)).id
    _run(sqlite_store, study_id)
    _rename_class(pets)

    written: list[str] = []
    lease = RefitLease(study_id, "w1", 1, 0)  # refit() itself checks no claim
    with pytest.raises(DataChangedError, match=r"changed since trial 0 trained .*: not refitted"):
        refit(SqlCoordinator(sqlite_store), lease, "cpu", written)
    assert written == []  # nothing trained or written
