"""A study's trials train on one dataset; test scores and refits of a trial see the
classes it trained on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from automl.data import load_dataset
from automl.spec import StudySpec
from automl.store import (
    EvaluationLease,
    EvaluationState,
    RefitLease,
    Store,
    attrs,
    best_trials,
    get_frozen_trial,
    get_study,
    list_trials,
    rerun_failed,
    resume_study,
    submit_study,
)
from automl.worker import SqlCoordinator, Worker, WorkerOptions, runner
from automl.worker.data_identity import DataChangedError, DataIdentity, require_study_data
from automl.worker.evaluator import score
from automl.worker.refitter import refit
from tests.data.conftest import write_class_folder

SpecFactory = Callable[..., StudySpec]


def _folder_spec(
    tiny_spec: SpecFactory, n_trials: int, *, test_fraction: float = 0.3, max_failed: int = 0
) -> StudySpec:
    """A study of the ``pets`` folder (no test split where ``test_fraction`` is 0)."""
    options: dict[str, Any] = {"path": "pets", "size": 8}
    if test_fraction:
        options["test_fraction"] = test_fraction
    dataset = {"source": "image_folder", "options": options}
    return tiny_spec(dataset=dataset, budget={"n_trials": n_trials, "max_failed": max_failed})


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
    spec = _folder_spec(tiny_spec, 1, test_fraction=0, max_failed=0)
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


# --- one dataset per study ------------------------------------------------------------------


def _move_one_image(data_root: Path, source: str, target: str) -> Path:
    """Moves one image of class ``source`` into ``target``: the same classes and totals."""
    image = sorted((data_root / "pets" / source).iterdir())[0]
    return Path(shutil.move(image, data_root / "pets" / target / f"moved-{image.name}"))


def test_a_trial_on_other_data_than_the_study_s_fails_saying_how(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    # Workers on several machines read their own copy of a folder; a trial on another
    # copy (or on the folder after it changed) was compared with the others as if equal.
    spec = _folder_spec(tiny_spec, 1, test_fraction=0, max_failed=5)
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)
    first = get_frozen_trial(sqlite_store, study_id, 0)
    recorded = DataIdentity.from_record(first.user_attrs[attrs.DATA])
    assert recorded is not None and recorded.images == {"train": 16, "val": 4, "test": 0}

    moved = _move_one_image(pets, "cat", "dog")
    resume_study(sqlite_store, study_id, 1)
    _run(sqlite_store, study_id)
    second = get_frozen_trial(sqlite_store, study_id, 1)
    assert second.state == TrialState.FAIL
    assert second.user_attrs[attrs.FAILURE] == "error"
    error = second.user_attrs[attrs.ERROR]
    assert "DataChangedError: dataset 'image_folder' here is not what trial 0 (worker " in error
    assert (
        "2 classes of 3x8x8 images, 16/4/0 train/val/test here, 2 classes of 3x8x8 images, "
        "16/4/0 train/val/test there (the same totals, other classes or images per class)" in error
    )
    assert error.endswith("or submit a new study")  # no automl source line for users
    assert attrs.DATA not in second.user_attrs  # the study's data stays trial 0's
    assert second.intermediate_values == {}  # failed before it trained

    # The data restored, the failed trial runs again and completes.
    shutil.move(moved, pets / "pets" / "cat" / moved.name.removeprefix("moved-"))
    rerun_failed(sqlite_store, study_id)
    _run(sqlite_store, study_id)
    states = [trial.state for trial in list_trials(sqlite_store, study_id).data]
    assert states == ["complete", "fail", "complete"]


def _trial(number: int, data: object = None) -> optuna.trial.FrozenTrial:
    user_attrs = {attrs.WORKER: f"w{number}"} | ({} if data is None else {attrs.DATA: data})
    trial = optuna.trial.create_trial(value=0.5, user_attrs=user_attrs)
    trial.number = number
    return trial


def test_the_lowest_numbered_trial_s_data_is_the_study_s(data_root: Path) -> None:
    """Two trials that load other data at once both pass the first check: the one with
    the higher number fails at its second, before it reports a result."""
    write_class_folder(data_root / "pets", {"cat": 10, "dog": 10})
    mine = DataIdentity.of(load_dataset("image_folder", {"path": "pets", "size": 8}))
    other = DataIdentity(digest="0" * 32, classes=3, images={"train": 9, "val": 3, "test": 0})
    trials = [_trial(2, mine.record()), _trial(1, other.record()), _trial(0, {"shape": "x"})]

    require_study_data(1, trials, other, "image_folder")  # trial 2 comes after it
    with pytest.raises(DataChangedError, match=r"not what trial 1 \(worker w1\) trained on"):
        require_study_data(2, trials, mine, "image_folder")
    require_study_data(3, [trials[0]], mine, "image_folder")
    require_study_data(1, [_trial(0), _trial(2)], mine, "image_folder")  # none recorded one


def test_a_refit_refuses_images_moved_since_the_trial_trained(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path
) -> None:
    """The same class names, other images per class: not the data the trial trained on."""
    study_id = submit_study(sqlite_store, _folder_spec(tiny_spec, 1)).id
    _run(sqlite_store, study_id)
    _move_one_image(pets, "cat", "dog")

    lease = RefitLease(study_id, "w1", 1, 0)
    with pytest.raises(DataChangedError, match=r"changed since trial 0 trained .*: not refitted"):
        refit(SqlCoordinator(sqlite_store), lease, "cpu", [])


def test_data_recorded_by_a_lower_trial_during_training_is_checked_before_the_result(
    sqlite_store: Store, tiny_spec: SpecFactory, pets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before the result closes the race the check at the start leaves open (a
    lower-numbered trial on other data recording its data meanwhile)."""
    checks: list[int] = []
    real = runner.require_study_data

    def second_fails(number: int, *args: Any) -> None:
        checks.append(number)
        if len(checks) == 2:
            raise DataChangedError("dataset 'image_folder' here is not what trial 0 trained on")
        real(number, *args)

    monkeypatch.setattr(runner, "require_study_data", second_fails)
    spec = _folder_spec(tiny_spec, 1, test_fraction=0, max_failed=0)
    study_id = submit_study(sqlite_store, spec).id
    _run(sqlite_store, study_id)

    assert checks == [0, 0]  # at the start and before the result
    first = get_frozen_trial(sqlite_store, study_id, 0)
    assert (first.state, first.user_attrs[attrs.FAILURE]) == (TrialState.FAIL, "error")
    assert get_study(sqlite_store, study_id).status == "failed"
