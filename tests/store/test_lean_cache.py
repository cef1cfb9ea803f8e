"""A study's finished trials kept without their bulky attributes
(``automl.store.lean_cache``), on each backend."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from automl.store import LeanTrialCache, Store, attrs, optuna_rows
from automl.store.lean_cache import LEFT_OUT

LR = FloatDistribution(1e-4, 1e-1, log=True)
OPTIMIZER = CategoricalDistribution(["adam", "sgd"])
HISTORY = [{"epoch": epoch, "loss": 0.5, "accuracy": 0.9} for epoch in range(1, 301)]


def _study(store: Store) -> optuna.Study:
    """A study with trials in every state, each with params, values or reports, and small
    and bulky user attributes and system attributes."""
    study = optuna.create_study(storage=store.storage, study_name="lean")
    for number, state in enumerate(
        [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    ):
        trial = study.ask({"lr": LR, "optimizer": OPTIMIZER})
        for epoch in (1, 2, 3):
            trial.report(0.1 * epoch + number, epoch)
        trial.set_user_attr(attrs.DATA, {"classes": 10})
        trial.set_user_attr(attrs.HISTORY, HISTORY)
        trial.set_user_attr(attrs.PER_CLASS, [{"class": "0", "recall": 1.0}])
        trial.set_user_attr(attrs.CONFUSION, [[1, 0], [0, 1]])
        study._storage.set_trial_system_attr(trial._trial_id, "nsga2:generation", number)
        study.tell(trial, [0.5 + number] if state == TrialState.COMPLETE else None, state=state)
    running = study.ask({"lr": LR})
    running.report(math.inf, 1)
    running.set_user_attr(attrs.HISTORY, HISTORY)
    return study


def _without_left_out(trial: FrozenTrial) -> dict[str, Any]:
    fields = {
        name: getattr(trial, name)
        for name in (
            "number",
            "state",
            "values",
            "params",
            "distributions",
            "intermediate_values",
            "system_attrs",
            "datetime_start",
            "datetime_complete",
        )
    }
    fields["user_attrs"] = {k: v for k, v in trial.user_attrs.items() if k not in LEFT_OUT}
    return fields


def test_trials_read_as_optuna_reads_them_but_the_bulky_attributes(store: Store) -> None:
    study = _study(store)
    study_id = study._study_id
    cache = LeanTrialCache(store)

    mine = cache.get_all_trials(study_id)
    theirs = store.storage.get_all_trials(study_id)

    assert [_without_left_out(t) for t in mine] == [_without_left_out(t) for t in theirs]
    assert all(not LEFT_OUT & trial.user_attrs.keys() for trial in mine)
    assert all(attrs.HISTORY in trial.user_attrs for trial in theirs)  # they were there
    complete = cache.get_all_trials(study_id, states=(TrialState.COMPLETE,))
    assert [trial.number for trial in complete] == [0, 3]
    assert cache.get_study_directions(study_id) == study.directions
    # A sampler on it proposes as on Optuna's storage.
    sampled = optuna.load_study(
        study_name="lean", storage=cache, sampler=optuna.samplers.TPESampler(seed=1)
    )
    assert sampled.ask({"lr": LR}).params["lr"] > 0
    assert cache.get_trial(mine[0]._trial_id).user_attrs[attrs.HISTORY] == HISTORY  # whole


def test_finished_trials_are_read_once_running_and_new_ones_every_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(store)
    cache = LeanTrialCache(store)
    loaded: list[list[int]] = []
    real = optuna_rows.load_trials

    def recording(connection: Any, trial_ids: list[int], *args: Any, **kwargs: Any) -> Any:
        loaded.append(sorted(trial_ids))
        return real(connection, trial_ids, *args, **kwargs)

    listed: list[int] = []
    real_listing = optuna_rows.trial_numbers_after

    def listing(*args: Any) -> dict[int, int]:
        found = real_listing(*args)
        listed.append(len(found))
        return found

    monkeypatch.setattr(optuna_rows, "load_trials", recording)
    monkeypatch.setattr(optuna_rows, "trial_numbers_after", listing)
    first = cache.get_all_trials(study._study_id, deepcopy=False)
    [running] = [trial for trial in first if trial.state == TrialState.RUNNING]
    study.tell(running.number, 0.9)
    study.add_trial(
        optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": LR}, value=0.1)
    )
    again = cache.get_all_trials(study._study_id, deepcopy=False)
    third = cache.get_all_trials(study._study_id, deepcopy=False)

    ids = [trial._trial_id for trial in again]
    assert loaded == [sorted(ids[:5]), ids[4:], []]
    # Past the watermark only: the running trial and what follows, then nothing (a
    # study's size costs a later read nothing).
    assert listed == [5, 2, 0]
    assert [(t.number, t.state) for t in again] == [(t.number, t.state) for t in third]
    assert again[4].state == TrialState.COMPLETE and again[4].values == [0.9]
    assert len(again) == 6 and [t.number for t in again] == list(range(6))
    assert again[0] is third[0]  # from memory
    copied = cache.get_all_trials(study._study_id)
    assert copied[0] is not again[0] and copied[0].params == again[0].params


def test_trials_finishing_out_of_order_stay_in_number_order(store: Store) -> None:
    """The finished trials are kept in number order between reads (sorting thousands on
    every read was most of its cost); a list returned before stays as it was."""
    study = optuna.create_study(storage=store.storage, study_name="order")
    trials = [study.ask({"lr": LR}) for _ in range(4)]
    cache = LeanTrialCache(store)
    study.tell(trials[2], 0.3)
    first = cache.get_all_trials(study._study_id, deepcopy=False)
    assert [(t.number, t.state) for t in first] == [
        (0, TrialState.RUNNING),
        (1, TrialState.RUNNING),
        (2, TrialState.COMPLETE),
        (3, TrialState.RUNNING),
    ]
    for number in (3, 0):
        study.tell(trials[number], 0.1 * number)
    second = cache.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    assert [t.number for t in second] == [0, 2, 3]
    assert [t.state for t in first] == [TrialState.RUNNING] * 2 + [TrialState.COMPLETE] + [
        TrialState.RUNNING
    ]
    study.tell(trials[1], 0.5)
    third = cache.get_all_trials(study._study_id, deepcopy=False)
    assert [(t.number, t.state) for t in third] == [(n, TrialState.COMPLETE) for n in range(4)]
    assert [t.number for t in second] == [0, 2, 3]


def test_a_missing_or_deleted_study_is_a_key_error(store: Store) -> None:
    cache = LeanTrialCache(store)
    with pytest.raises(KeyError):
        cache.get_all_trials(12345)
    study = optuna.create_study(storage=store.storage, study_name="empty")
    assert cache.get_all_trials(study._study_id) == []
    optuna.delete_study(study_name="empty", storage=store.storage)
    with pytest.raises(KeyError):
        cache.get_all_trials(study._study_id)
