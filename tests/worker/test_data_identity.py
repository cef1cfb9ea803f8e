"""Every trial of a study, its test scores and its refit see the data it trained on."""

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
    StudyStatus,
    attrs,
    best_trials,
    get_study,
    resume_study,
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


def test_the_study_records_its_data_and_a_trial_on_other_data_fails(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    study_id = submit_study(sqlite_store, _folder_spec(tiny_spec, 1)).id
    recorded = sqlite_store.storage.get_study_user_attrs(study_id)[attrs.DATASET_FINGERPRINT]
    assert _run(sqlite_store, study_id) == 1
    [first] = sqlite_store.storage.get_all_trials(study_id)
    assert recorded == first.user_attrs[attrs.INPUT]["dataset"]["fingerprint"]

    _rename_class(pets)
    resume_study(sqlite_store, study_id, add_trials=1)
    _run(sqlite_store, study_id)

    second = sqlite_store.storage.get_all_trials(study_id)[1]
    assert second.user_attrs[attrs.FAILURE] == "error"
    error = second.user_attrs[attrs.ERROR]
    assert error.startswith(
        f"DataChangedError: dataset 'image_folder' changed since the study was submitted "
        f"(fingerprint {recorded[:12]} then, fingerprint "
    )
    assert "submit a new study on the data as it is now" in error
    assert get_study(sqlite_store, study_id).status == StudyStatus.FAILED


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
    with pytest.raises(DataChangedError, match="changed since trial 0 trained") as raised:
        score(coordinator, lease, "cpu")
    assert "test metrics not computed" in str(raised.value)


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
