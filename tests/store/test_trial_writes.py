"""A running trial's buffered writes in one transaction: what Optuna's setters would write."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import Store, TrialWrites, submit_study, write_trial
from tests.store.conftest import start_trial

SpecFactory = Callable[..., StudySpec]

LR = FloatDistribution(1e-4, 1e-1, log=True)
ACT = CategoricalDistribution(["relu", "gelu"])


def test_writes_land_as_optunas_setters_would(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    _, batched = start_trial(store, study_id)
    _, one_by_one = start_trial(store, study_id, worker="worker-b")
    steps = {1: 0.5, 2: math.nan, 3: math.inf, 4: -math.inf}

    write_trial(
        store,
        batched,
        TrialWrites(
            params={
                "lr": (0.01, distribution_to_json(LR)),
                "act": (1.0, distribution_to_json(ACT)),
            },
            steps=steps,
            user_attrs={"config": {"a": [1, 2]}},
            system_attrs={"artifacts:x": {"id": "x"}},
        ),
    )
    storage = store.storage
    storage.set_trial_param(one_by_one, "lr", 0.01, LR)
    storage.set_trial_param(one_by_one, "act", 1.0, ACT)
    for step, value in steps.items():
        storage.set_trial_intermediate_value(one_by_one, step, value)
    storage.set_trial_user_attr(one_by_one, "config", {"a": [1, 2]})
    storage.set_trial_system_attr(one_by_one, "artifacts:x", {"id": "x"})

    got, want = storage.get_trial(batched), storage.get_trial(one_by_one)
    assert got.params == want.params == {"lr": 0.01, "act": "gelu"}
    assert list(got.params) == ["lr", "act"]  # suggestion order kept
    assert got.distributions == want.distributions
    assert set(got.intermediate_values) == {1, 2, 3, 4}
    assert got.intermediate_values[1] == 0.5 and math.isnan(got.intermediate_values[2])
    assert got.intermediate_values[3] == math.inf and got.intermediate_values[4] == -math.inf
    assert {k: v for k, v in got.user_attrs.items() if k == "config"} == {"config": {"a": [1, 2]}}
    assert got.system_attrs["artifacts:x"] == want.system_attrs["artifacts:x"]
    assert got.state == TrialState.RUNNING


def test_later_writes_replace_earlier_ones(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec()).id
    _, trial_id = start_trial(store, study_id)
    first = TrialWrites(steps={1: 0.1}, user_attrs={"k": 1})
    write_trial(store, trial_id, first)
    write_trial(store, trial_id, TrialWrites(steps={1: 0.2, 2: 0.3}, user_attrs={"k": 2}))

    trial = store.storage.get_trial(trial_id)
    assert trial.intermediate_values == {1: 0.2, 2: 0.3}
    assert trial.user_attrs["k"] == 2
    assert first.then(TrialWrites(user_attrs={"k": 3})).user_attrs == {"k": 3}


def test_a_finished_trial_refuses_them_all(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec()).id
    _, trial_id = start_trial(store, study_id)
    store.storage.set_trial_state_values(trial_id, TrialState.FAIL)  # as the reaper would

    with pytest.raises(UpdateFinishedTrialError):
        write_trial(store, trial_id, TrialWrites(steps={1: 0.5}, user_attrs={"late": True}))
    trial = store.storage.get_trial(trial_id)
    assert trial.intermediate_values == {} and "late" not in trial.user_attrs


def test_an_incompatible_distribution_is_refused_whole(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    _, first = start_trial(store, study_id)
    _, second = start_trial(store, study_id, worker="worker-b")
    lr = distribution_to_json(LR)
    write_trial(store, first, TrialWrites(params={"x": (0.5, lr), "y": (0.5, lr)}))

    # Every name is checked (one statement for all), whichever comes first.
    bad = TrialWrites(
        params={"y": (0.5, lr), "x": (0.0, distribution_to_json(ACT))}, user_attrs={"k": 1}
    )
    with pytest.raises(ValueError):
        write_trial(store, second, bad)
    trial = store.storage.get_trial(second)
    assert trial.params == {} and "k" not in trial.user_attrs

    wider = distribution_to_json(FloatDistribution(1e-6, 1.0, log=True))  # same kind: fine
    write_trial(store, second, TrialWrites(params={"x": (0.5, lr), "y": (0.5, wider)}))
    assert store.storage.get_trial(second).params == {"x": 0.5, "y": 0.5}


def test_wire_form_round_trips_and_malformed_is_refused() -> None:
    writes = TrialWrites(
        params={"lr": (0.01, distribution_to_json(LR))},
        steps={3: math.inf},
        user_attrs={"a": [1]},
        system_attrs={"s": None},
    )
    assert TrialWrites.from_json(writes.to_json()) == writes
    assert not TrialWrites() and writes
    for bad in ({}, {"params": [], "steps": {}, "user_attrs": {}, "system_attrs": {}}):
        with pytest.raises(ValueError, match="malformed"):
            TrialWrites.from_json(bad)


def test_many_params_are_checked_in_batches(store: Store, tiny_spec: SpecFactory) -> None:
    """SQLite refuses a compound SELECT of more than 500 terms: 600 names take batches."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    _, first = start_trial(store, study_id)
    _, second = start_trial(store, study_id, worker="worker-b")
    lr = distribution_to_json(LR)
    names = [f"p{i}" for i in range(600)]
    write_trial(store, first, TrialWrites(params={name: (0.5, lr) for name in names}))

    bad = {name: (0.5, lr) for name in names}
    bad["p550"] = (0.0, distribution_to_json(ACT))
    with pytest.raises(ValueError):
        write_trial(store, second, TrialWrites(params=bad))
    write_trial(store, second, TrialWrites(params={name: (0.5, lr) for name in names}))
    assert len(store.storage.get_trial(second).params) == 600
