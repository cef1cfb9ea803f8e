"""Study lifecycle on the Optuna storage; every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
import torch
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import (
    NoBestTrialError,
    QueuedTrialStorage,
    StudyNotFoundError,
    StudyStateError,
    StudyStatus,
    TrialNotFoundError,
    WeightsNotFoundError,
    active_study_ids,
    attrs,
    best_trials,
    cancel_study,
    get_frozen_trial,
    get_status,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    load_spec,
    mark_running,
    open_weights,
    save_weights,
    settle_study,
    submit_study,
)

SpecFactory = Callable[..., StudySpec]
Outcome = float | Sequence[float] | TrialState
"""How to end a driven trial: its value(s), or PRUNED/FAIL/RUNNING (left running)."""


def _load(storage: QueuedTrialStorage, study_id: int) -> optuna.Study:
    return optuna.load_study(study_name=storage.get_study_name_from_id(study_id), storage=storage)


def _drive(storage: QueuedTrialStorage, study_id: int, outcomes: Sequence[Outcome]) -> None:
    """Claims one queued trial per outcome, as a worker would, and ends it that way."""
    study = _load(storage, study_id)
    for outcome in outcomes:
        trial = study.ask()
        if outcome == TrialState.RUNNING:
            continue
        if isinstance(outcome, TrialState):
            study.tell(trial, state=outcome)
        else:
            study.tell(trial, outcome)


def _set_started_at(storage: QueuedTrialStorage, study_id: int, ago_s: float) -> None:
    started = datetime.now(UTC) - timedelta(seconds=ago_s)
    storage.set_study_user_attr(study_id, attrs.STARTED_AT, started.isoformat())


def _states(storage: QueuedTrialStorage, study_id: int) -> list[TrialState]:
    return [t.state for t in storage.get_all_trials(study_id)]


# --- submit ----------------------------------------------------------------------------------


def test_submit_creates_optuna_study_with_spec_status_and_queue(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(name="digits-search", budget={"n_trials": 4, "max_failed": 1})
    detail = submit_study(storage, spec)

    study = optuna.load_study(study_name="digits-search", storage=storage)
    assert study._study_id == detail.id
    assert study.directions == [StudyDirection.MAXIMIZE]
    assert study.metric_names == ["accuracy"]
    user_attrs = study.user_attrs
    assert StudySpec.model_validate(user_attrs[attrs.SPEC]) == spec  # JSON that round-trips
    assert user_attrs[attrs.STATUS] == "queued"
    assert datetime.fromisoformat(user_attrs[attrs.CREATED_AT]).tzinfo is not None
    assert attrs.STARTED_AT not in user_attrs
    assert storage.get_study_user_attrs(detail.id) == user_attrs

    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.state for t in trials} == {TrialState.WAITING}
    assert all(t.params == {} for t in trials)

    assert detail.name == "digits-search"
    assert detail.status == StudyStatus.QUEUED
    assert detail.n_trials == 4
    assert detail.directions == ["maximize"]
    assert detail.metrics == ["accuracy"]
    assert detail.counts.waiting == 4
    assert detail.counts.finished == 0
    assert detail.best_value is None
    assert detail.spec == user_attrs[attrs.SPEC]
    assert load_spec(storage, detail.id) == spec


def test_submit_uses_metric_natural_direction(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    detail = submit_study(storage, tiny_spec(objective={"metric": "loss"}))
    assert storage.get_study_directions(detail.id) == [StudyDirection.MINIMIZE]
    assert detail.directions == ["minimize"]


def test_submit_multi_objective_sets_every_direction_and_metric_name(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None,
        objectives=[{"metric": "accuracy"}, {"metric": "loss"}],
        pruner={"name": "none"},
    )
    detail = submit_study(storage, spec)
    study = optuna.load_study(study_name=detail.name, storage=storage)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["accuracy", "loss"]
    assert detail.metrics == ["accuracy", "loss"]
    assert detail.directions == ["maximize", "minimize"]
    assert len(study.get_trials(states=(TrialState.WAITING,))) == spec.budget.n_trials


def test_duplicate_names_get_numbered_suffixes(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    names = [submit_study(storage, tiny_spec(name="same")).name for _ in range(3)]
    assert names == ["same", "same-2", "same-3"]
    assert {s.study_name for s in storage.get_all_studies()} == {"same", "same-2", "same-3"}


def test_suffix_skips_names_taken_by_plain_optuna_studies(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    optuna.create_study(storage=storage, study_name="taken")
    optuna.create_study(storage=storage, study_name="taken-2")
    assert submit_study(storage, tiny_spec(name="taken")).name == "taken-3"


# --- reading ---------------------------------------------------------------------------------


def test_get_study_counts_trials_by_state(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 6, "max_failed": 5})).id
    _drive(storage, study_id, [0.5, 0.8, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING])
    detail = get_study(storage, study_id)
    counts = detail.counts
    assert (counts.waiting, counts.running) == (1, 1)
    assert (counts.complete, counts.pruned, counts.fail) == (2, 1, 1)
    assert counts.finished == 4
    assert detail.best_value == pytest.approx(0.8)
    assert detail.counts.model_dump()["finished"] == 4


def test_get_study_of_multi_objective_has_no_best_value(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None, objectives=[{"metric": "accuracy"}, {"metric": "loss"}], pruner=None
    )
    study_id = submit_study(storage, spec).id
    _drive(storage, study_id, [(0.9, 0.3)])
    detail = get_study(storage, study_id)
    assert detail.counts.complete == 1
    assert detail.best_value is None


def test_list_studies_newest_first_with_paging_and_status_filter(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    ids = [submit_study(storage, tiny_spec(name=f"s{i}")).id for i in range(4)]
    optuna.create_study(storage=storage, study_name="not-automl")
    cancel_study(storage, ids[1])

    everything = list_studies(storage)
    assert everything.count == 4
    assert [s.id for s in everything.data] == ids[::-1]
    assert [s.name for s in everything.data] == ["s3", "s2", "s1", "s0"]

    first = list_studies(storage, limit=3)
    second = list_studies(storage, limit=3, offset=3)
    assert (first.count, second.count) == (4, 4)
    assert [s.id for s in first.data + second.data] == ids[::-1]
    assert list_studies(storage, offset=10).data == []

    cancelled = list_studies(storage, status=StudyStatus.CANCELLED)
    assert (cancelled.count, [s.id for s in cancelled.data]) == (1, [ids[1]])
    queued = list_studies(storage, status=StudyStatus.QUEUED)
    assert [s.id for s in queued.data] == [ids[3], ids[2], ids[0]]
    assert list_studies(storage, status=StudyStatus.FAILED).count == 0


def test_active_study_ids_are_queued_and_running_oldest_first(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    ids = [submit_study(storage, tiny_spec(name=f"s{i}")).id for i in range(3)]
    optuna.create_study(storage=storage, study_name="not-automl")
    mark_running(storage, ids[2])
    cancel_study(storage, ids[0])
    assert active_study_ids(storage) == [ids[1], ids[2]]


def test_unknown_study_raises_study_not_found(storage: QueuedTrialStorage) -> None:
    missing = 987_654
    for call in (
        lambda: get_study(storage, missing),
        lambda: get_status(storage, missing),
        lambda: load_spec(storage, missing),
        lambda: cancel_study(storage, missing),
        lambda: best_trials(storage, missing),
        lambda: list_trials(storage, missing),
        lambda: get_trial(storage, missing, 0),
        lambda: mark_running(storage, missing),
        lambda: settle_study(storage, missing),
    ):
        with pytest.raises(StudyNotFoundError, match=f"study {missing} not found"):
            call()


def test_plain_optuna_study_is_not_an_automl_study(storage: QueuedTrialStorage) -> None:
    plain = optuna.create_study(storage=storage, study_name="plain")
    plain.enqueue_trial({})
    study_id = plain._study_id
    for call in (
        lambda: get_study(storage, study_id),
        lambda: get_status(storage, study_id),
        lambda: cancel_study(storage, study_id),
        lambda: best_trials(storage, study_id),
        lambda: list_trials(storage, study_id),
        lambda: get_trial(storage, study_id, 0),
    ):
        with pytest.raises(StudyNotFoundError) as info:
            call()
        assert info.value.study_id == study_id
    assert list_studies(storage).count == 0
    assert active_study_ids(storage) == []


def test_list_trials_in_number_order_with_state_filter_and_paging(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 5, "max_failed": 5})).id
    _drive(storage, study_id, [0.7, TrialState.FAIL, 0.9])

    listed = list_trials(storage, study_id)
    assert listed.count == 5
    assert [t.number for t in listed.data] == [0, 1, 2, 3, 4]
    assert [t.state for t in listed.data] == ["complete", "fail", "complete", "waiting", "waiting"]
    assert listed.data[0].values == [pytest.approx(0.7)]
    assert listed.data[3].values is None

    complete = list_trials(storage, study_id, state=TrialState.COMPLETE)
    assert (complete.count, [t.number for t in complete.data]) == (2, [0, 2])
    waiting = list_trials(storage, study_id, state=TrialState.WAITING)
    assert [t.number for t in waiting.data] == [3, 4]
    assert list_trials(storage, study_id, state=TrialState.PRUNED).count == 0

    page = list_trials(storage, study_id, limit=2, offset=1)
    assert (page.count, [t.number for t in page.data]) == (5, [1, 2])


def test_get_trial_by_number_and_missing_trial(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    study = _load(storage, study_id)
    trial = study.ask()
    trial.set_user_attr(attrs.METRICS, {"accuracy": 0.75})
    trial.set_user_attr(attrs.CONFIG, {"epochs": 1})
    trial.set_user_attr(attrs.HISTORY, [{"epoch": 1.0, "accuracy": 0.75}])
    trial.report(0.75, 1)
    study.tell(trial, 0.75)

    detail = get_trial(storage, study_id, 0)
    assert detail.number == 0
    assert detail.state == "complete"
    assert detail.values == [pytest.approx(0.75)]
    assert detail.metrics == {"accuracy": 0.75}
    assert detail.config == {"epochs": 1}
    assert detail.history == [{"epoch": 1.0, "accuracy": 0.75}]
    assert detail.intermediate_values == {1: pytest.approx(0.75)}
    assert detail.weights_available is False
    assert detail.duration_s is not None and detail.duration_s >= 0
    assert get_frozen_trial(storage, study_id, 0).user_attrs[attrs.METRICS] == {"accuracy": 0.75}
    assert get_trial(storage, study_id, 1).state == "waiting"

    with pytest.raises(TrialNotFoundError, match=f"study {study_id} has no trial 99"):
        get_trial(storage, study_id, 99)


# --- lifecycle -------------------------------------------------------------------------------


def test_cancel_queued_study_then_cancel_again_is_refused(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    detail = cancel_study(storage, study_id)
    assert detail.status == StudyStatus.CANCELLED
    assert detail.status_reason == "cancelled by request"
    assert detail.finished_at is not None
    assert get_status(storage, study_id) == StudyStatus.CANCELLED
    assert detail.counts.waiting == 3  # queued trials stay queued, no trial is touched

    with pytest.raises(StudyStateError, match="already cancelled"):
        cancel_study(storage, study_id)


def test_cancel_running_study(storage: QueuedTrialStorage, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    mark_running(storage, study_id)
    assert cancel_study(storage, study_id).status == StudyStatus.CANCELLED


def test_cancel_finished_study_is_refused(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    _drive(storage, study_id, [0.5])
    assert settle_study(storage, study_id) == StudyStatus.COMPLETED
    with pytest.raises(StudyStateError, match="already completed"):
        cancel_study(storage, study_id)


def test_mark_running_moves_queued_to_running_once(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    mark_running(storage, study_id)
    assert get_status(storage, study_id) == StudyStatus.RUNNING
    started = storage.get_study_user_attrs(study_id)[attrs.STARTED_AT]
    assert datetime.fromisoformat(started) <= datetime.now(UTC)

    mark_running(storage, study_id)  # already running: the start time is kept
    assert storage.get_study_user_attrs(study_id)[attrs.STARTED_AT] == started
    assert get_study(storage, study_id).started_at == datetime.fromisoformat(started)


def test_mark_running_leaves_ended_study_alone(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    cancel_study(storage, study_id)
    mark_running(storage, study_id)
    assert get_status(storage, study_id) == StudyStatus.CANCELLED
    assert attrs.STARTED_AT not in storage.get_study_user_attrs(study_id)


def test_settle_completes_once_every_trial_finished(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 3, "max_failed": 1})).id
    mark_running(storage, study_id)
    assert settle_study(storage, study_id) == StudyStatus.RUNNING

    _drive(storage, study_id, [0.5, TrialState.PRUNED])
    assert settle_study(storage, study_id) == StudyStatus.RUNNING

    _drive(storage, study_id, [TrialState.FAIL])  # one failure is allowed
    assert settle_study(storage, study_id) == StudyStatus.COMPLETED
    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.COMPLETED
    assert detail.status_reason == "all trials finished"
    assert detail.finished_at is not None
    assert settle_study(storage, study_id) == StudyStatus.COMPLETED  # idempotent


def test_settle_fails_study_when_failures_exceed_max_failed(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 5, "max_failed": 1})).id
    _drive(storage, study_id, [TrialState.FAIL])
    assert settle_study(storage, study_id) == StudyStatus.QUEUED
    _drive(storage, study_id, [TrialState.FAIL])
    assert settle_study(storage, study_id) == StudyStatus.FAILED

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason == "2 trials failed (max_failed is 1)"
    assert detail.finished_at is not None
    assert (detail.counts.fail, detail.counts.waiting) == (2, 3)
    assert active_study_ids(storage) == []


def test_settle_fails_on_first_failure_with_max_failed_zero(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    _drive(storage, study_id, [TrialState.FAIL])
    assert settle_study(storage, study_id) == StudyStatus.FAILED


def test_settle_completes_timed_out_study_without_running_trials(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 5, "max_failed": 1, "timeout": 60})
    study_id = submit_study(storage, spec).id
    mark_running(storage, study_id)
    _drive(storage, study_id, [0.5])
    assert settle_study(storage, study_id) == StudyStatus.RUNNING  # 60 s not yet passed

    _set_started_at(storage, study_id, ago_s=120)
    assert settle_study(storage, study_id) == StudyStatus.COMPLETED
    detail = get_study(storage, study_id)
    assert detail.status_reason == "timeout reached"
    assert (detail.counts.complete, detail.counts.waiting) == (1, 4)


def test_settle_waits_for_running_trials_after_timeout(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 1, "timeout": 1})
    study_id = submit_study(storage, spec).id
    mark_running(storage, study_id)
    _set_started_at(storage, study_id, ago_s=10)
    _drive(storage, study_id, [TrialState.RUNNING])
    assert settle_study(storage, study_id) == StudyStatus.RUNNING

    running = storage.get_all_trials(study_id, states=(TrialState.RUNNING,))[0]
    _load(storage, study_id).tell(running.number, 0.5)
    assert settle_study(storage, study_id) == StudyStatus.COMPLETED


def test_settle_without_timeout_never_times_out(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    mark_running(storage, study_id)
    _set_started_at(storage, study_id, ago_s=10 * 365 * 24 * 3600)
    assert settle_study(storage, study_id) == StudyStatus.RUNNING


def test_settle_leaves_ended_study_alone(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    cancel_study(storage, study_id)
    assert settle_study(storage, study_id) == StudyStatus.CANCELLED
    assert get_study(storage, study_id).status_reason == "cancelled by request"


# --- best trials -----------------------------------------------------------------------------


def test_best_trials_before_any_completion_raises(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    with pytest.raises(NoBestTrialError):
        best_trials(storage, study_id)
    _drive(storage, study_id, [TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING])
    with pytest.raises(NoBestTrialError, match="no completed trial"):
        best_trials(storage, study_id)


def test_best_trials_returns_the_best_of_one_objective(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 4, "max_failed": 1})).id
    _drive(storage, study_id, [0.5, 0.9, 0.7, TrialState.FAIL])
    best = best_trials(storage, study_id)
    assert best.study_id == study_id
    assert (best.directions, best.metrics) == (["maximize"], ["accuracy"])
    [trial] = best.trials
    assert trial.number == 1
    assert trial.values == [pytest.approx(0.9)]


def test_best_trials_respects_minimize(storage: QueuedTrialStorage, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(storage, tiny_spec(objective={"metric": "loss"})).id
    _drive(storage, study_id, [0.5, 0.2, 0.7])
    assert [t.number for t in best_trials(storage, study_id).trials] == [1]


def test_best_trials_of_multi_objective_is_the_pareto_front(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None,
        objectives=[{"metric": "accuracy"}, {"metric": "loss"}],
        budget={"n_trials": 4, "max_failed": 1},
        pruner=None,
    )
    study_id = submit_study(storage, spec).id
    # (accuracy up, loss down): 2 is dominated by 0; 0, 1 and 3 trade off.
    _drive(storage, study_id, [(0.9, 0.5), (0.8, 0.3), (0.7, 0.6), (0.95, 0.9)])
    best = best_trials(storage, study_id)
    assert best.directions == ["maximize", "minimize"]
    assert best.metrics == ["accuracy", "loss"]
    assert [t.number for t in best.trials] == [0, 1, 3]
    assert best.trials[1].values == [pytest.approx(0.8), pytest.approx(0.3)]


def test_best_trials_of_multi_objective_before_completion_raises(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None, objectives=[{"metric": "accuracy"}, {"metric": "loss"}], pruner=None
    )
    study_id = submit_study(storage, spec).id
    with pytest.raises(NoBestTrialError):
        best_trials(storage, study_id)


# --- weights ---------------------------------------------------------------------------------


def test_save_and_open_weights_round_trip(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    study = _load(storage, study_id)
    trial = study.ask()
    state_dict = {
        "conv.weight": torch.randn(4, 1, 3, 3),
        "conv.bias": torch.zeros(4),
        "bn.num_batches_tracked": torch.tensor(7),
    }
    artifacts = tmp_path / "artifacts"
    artifact_id = save_weights(storage, trial, state_dict, artifacts)
    study.tell(trial, 0.5)

    frozen = get_frozen_trial(storage, study_id, trial.number)
    assert frozen.user_attrs[attrs.WEIGHTS] == artifact_id
    assert get_trial(storage, study_id, trial.number).weights_available is True
    with open_weights(frozen, artifacts) as reader:
        loaded = torch.load(io.BytesIO(reader.read()), weights_only=True)
    assert loaded.keys() == state_dict.keys()
    for name, tensor in state_dict.items():
        assert torch.equal(loaded[name], tensor)


def test_open_weights_of_trial_without_weights_raises(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    _drive(storage, study_id, [TrialState.FAIL])
    frozen = get_frozen_trial(storage, study_id, 0)
    with pytest.raises(WeightsNotFoundError, match="trial 0 kept no weights"):
        open_weights(frozen, tmp_path)


def test_open_weights_from_wrong_folder_raises(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    study = _load(storage, study_id)
    trial = study.ask()
    save_weights(storage, trial, {"w": torch.ones(2)}, tmp_path / "here")
    study.tell(trial, 0.5)
    frozen = get_frozen_trial(storage, study_id, trial.number)
    with pytest.raises(WeightsNotFoundError, match="missing from"):
        open_weights(frozen, tmp_path / "elsewhere")
