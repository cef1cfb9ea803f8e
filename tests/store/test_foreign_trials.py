"""Trials that automl did not create (plain Optuna on an automl study), and trials of
automl's that another tool ended while they ran (plain optuna-dashboard's "tell", with a
made-up value), are listed, never ranked: no best value, best trial, top-k or Pareto front
counts them, on each backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from automl.spec import StudySpec
from automl.store import (
    Outranking,
    Store,
    attrs,
    best_trials,
    get_study,
    get_trial,
    list_studies,
    list_trials,
    optuna_rows,
    retain_weights,
    save_weights,
    submit_study,
)
from automl.store.best_reads import best_trials_of
from automl.store.refits import serving_pick
from tests.store.conftest import Outcome, end_trial, start_trial

SpecFactory = Callable[..., StudySpec]


def _optuna_study(store: Store, study_id: int) -> optuna.Study:
    name = store.storage.get_study_name_from_id(study_id)
    return optuna.load_study(study_name=name, storage=store.storage)


def _run(store: Store, study_id: int, outcome: Outcome) -> int:
    """One automl trial that saves weights while running, then ends with ``outcome``."""
    lease, trial_id = start_trial(store, study_id)
    trial = optuna.Trial(_optuna_study(store, study_id), trial_id)
    save_weights(store.storage, trial, {"w": torch.zeros(2)}, store.artifacts)
    end_trial(store, lease, trial_id, outcome)
    return trial.number


def _add_foreign(store: Store, study_id: int, values: Sequence[float]) -> int:
    """A COMPLETE trial added with plain Optuna (no ``automl.ticket``); returns its id."""
    study = _optuna_study(store, study_id)
    study.add_trial(
        create_trial(
            values=list(values),
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
        )
    )
    number = study.trials[-1].number
    return store.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def _told_outside(store: Store, study_id: int, values: Sequence[float]) -> int:
    """A trial of automl's that another tool tells COMPLETE while its worker trains (no
    result of automl's recorded); returns its id."""
    _, trial_id = start_trial(store, study_id)
    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, list(values))
    return trial_id


INTRUDERS = {"added": _add_foreign, "told": _told_outside}


def _holding(store: Store, study_id: int) -> list[int]:
    return [
        trial.number
        for trial in store.storage.get_all_trials(study_id)
        if attrs.WEIGHTS in trial.user_attrs
    ]


@pytest.mark.parametrize("intruder", sorted(INTRUDERS))
@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_foreign_trials_are_listed_but_never_ranked(
    store: Store, tiny_spec: SpecFactory, metric: str, intruder: str
) -> None:
    maximize = metric == "accuracy"
    sign = 1.0 if maximize else -1.0
    spec = tiny_spec(
        objective={"metric": metric}, keep_weights=1, budget={"n_trials": 5, "max_failed": 1}
    )
    study_id = submit_study(store, spec).id
    _run(store, study_id, sign * 0.7)
    best = _run(store, study_id, sign * 0.8)  # automl's best
    foreign = INTRUDERS[intruder](store, study_id, [sign * 0.999])  # better than any of automl's
    study = _optuna_study(store, study_id)
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda trial: sign * (1.0 + trial.suggest_float("x", 0, 1)), n_trials=2)
    assert study.best_trial.number != best  # plain Optuna ranks the foreign trials first

    assert get_study(store, study_id).best_value == pytest.approx(sign * 0.8)
    assert [s.best_value for s in list_studies(store).data] == [pytest.approx(sign * 0.8)]
    assert [trial.number for trial in best_trials(store, study_id).trials] == [best]
    assert [trial.number for trial in best_trials_of(store, study_id, [spec.directions[0]])] == [
        best
    ]
    pick = serving_pick(store, study_id)
    assert pick is not None and pick.number == best
    with store.read() as connection:
        assert optuna_rows.best_values(
            connection, [study_id] if maximize else [], [] if maximize else [study_id]
        ) == {study_id: pytest.approx(sign * 0.8)}
        assert optuna_rows.best_trial_number(connection, study_id, maximize) == best
        best_id = optuna_rows.best_trial_id(connection, study_id, maximize)
        top = optuna_rows.top_ranked(connection, study_id, maximize, 10)
        assert [number for _, _, number in top] == [best, 0]
        assert optuna_rows.top_trial_ids(connection, study_id, maximize, 10) == [
            trial_id for trial_id, _, _ in top
        ]
        assert top[0][0] == best_id
        faked = [(foreign, sign * 0.999, 2), *top]
        assert optuna_rows.count_still_ranked(connection, study_id, faked) == 2
        assert foreign not in optuna_rows.completed_values(connection, study_id)

    # Ranked among automl's trials only: the best keeps its weights.
    assert retain_weights(store, study_id) == [0]
    assert _holding(store, study_id) == [best]
    assert Outranking(store)(study_id, sign * 0.75, 9, maximize, 1)  # automl's 0.8 ranks above
    assert not Outranking(store)(study_id, sign * 0.85, 9, maximize, 1)  # no foreign one does
    # Listed all the same, foreign trials without a ticket.
    listed = list_trials(store, study_id).data
    assert [(t.state, t.ticket is None) for t in listed] == [
        ("complete", False),
        ("complete", False),
        ("complete", intruder == "added"),
        ("complete", True),
        ("complete", True),
    ]


def _two_objective_spec(tiny_spec: SpecFactory) -> StudySpec:
    objectives = [{"metric": "accuracy"}, {"metric": "latency_ms"}]
    return tiny_spec(
        objective=None,
        objectives=objectives,
        pruner=None,
        keep_weights=1,
        budget={"n_trials": 5, "max_failed": 1},
    )


@pytest.mark.parametrize("intruder", sorted(INTRUDERS))
def test_foreign_trials_are_never_on_the_pareto_front(
    store: Store, tiny_spec: SpecFactory, intruder: str
) -> None:
    spec = _two_objective_spec(tiny_spec)
    study_id = submit_study(store, spec).id
    points: list[tuple[float, float]] = [
        (0.90, 5.0),  # 0: front
        (0.80, 2.0),  # 1: front
        (0.70, 3.0),  # 2: dominated by 1
    ]
    for point in points:
        _run(store, study_id, point)
    foreign = INTRUDERS[intruder](store, study_id, [0.99, 0.1])  # would dominate every one

    front = best_trials(store, study_id).trials
    assert [trial.number for trial in front] == [0, 1]
    assert [s.best_value for s in list_studies(store).data] == [None]  # several objectives
    with store.read() as connection:
        values = optuna_rows.completed_values(connection, study_id)
    assert foreign not in values and len(values) == 3
    assert retain_weights(store, study_id) == [2]
    assert _holding(store, study_id) == [0, 1]


def test_automl_attributes_written_in_another_shape_show_as_null(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by a tester: ``automl.ticket: "abc"`` written on a running trial with plain
    optuna-dashboard made every listing of the study a 500 for good, and a NaN in
    ``automl.metrics`` an answer that is not JSON."""
    study_id = submit_study(store, tiny_spec()).id
    _, trial_id = start_trial(store, study_id)
    for key, value in {
        attrs.TICKET: "abc",
        attrs.ATTEMPT: "zz",
        attrs.CLASSES: 3,
        attrs.METRICS: {"loss": float("nan"), "accuracy": 0.5},
    }.items():
        store.storage.set_trial_user_attr(trial_id, key, value)

    [listed] = list_trials(store, study_id).data
    detail = get_trial(store, study_id, listed.number)

    assert (listed.ticket, listed.attempt) == (None, None)
    assert listed.metrics == {"loss": None, "accuracy": 0.5}
    assert listed.state == "running"
    assert (detail.ticket, detail.classes, detail.metrics) == (None, None, listed.metrics)
    assert json.loads(listed.model_dump_json())["metrics"] == {"loss": None, "accuracy": 0.5}
