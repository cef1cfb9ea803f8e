"""A cache of finished trials per study (``automl.store.study_caches``), on each backend."""

from __future__ import annotations

import gc
import weakref
from typing import Any, cast

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl.store import Store, StudyCaches

LR = FloatDistribution(1e-4, 1e-1, log=True)


class Spy:
    """A storage that records which of its methods were called, then calls them."""

    def __init__(self, storage: BaseStorage, calls: list[str]) -> None:
        self.storage, self.calls = storage, calls

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self.storage, name)


class Opened:
    """Opens Optuna's cached storage on the store and remembers each cache it opened (and,
    in ``calls``, what was asked of any of them)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.caches: list[BaseStorage] = []
        self.closed: list[BaseStorage] = []
        self.calls: list[str] = []

    def open(self) -> BaseStorage:
        cache = cast(BaseStorage, Spy(optuna.storages.get_storage(self.store.storage), self.calls))
        self.caches.append(cache)
        return cache

    def close(self, cache: BaseStorage) -> None:
        self.closed.append(cache)


def _studies(store: Store, count: int, trials: int = 2) -> list[int]:
    """Studies with ``trials`` finished trials each (values 0, 1, ...)."""
    ids = []
    for n in range(count):
        study = optuna.create_study(storage=store.storage, study_name=f"caches-{n}")
        for value in range(trials):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": 0.01}, distributions={"lr": LR}, value=float(value)
                )
            )
        ids.append(store.storage.get_study_id_from_name(f"caches-{n}"))
    return ids


def test_each_study_keeps_its_own_cache_and_only_the_least_recent_is_dropped(
    store: Store,
) -> None:
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage, capacity=2, close=opened.close)
    a, b, c = _studies(store, 3)

    assert [t.value for t in caches.get_all_trials(a)] == [0.0, 1.0]
    caches.get_all_trials(b)
    cache_of_b = caches.cache_of(b)
    caches.get_all_trials(a)  # a is now the most recent: b goes when c comes
    caches.get_all_trials(c)

    assert caches.cached_studies() == [a, c]
    assert len(opened.caches) == 3  # a was not read again
    assert opened.closed == [cache_of_b]
    caches.get_all_trials(b)
    assert caches.cached_studies() == [c, b] and len(opened.caches) == 4


def test_a_dropped_cache_is_freed(store: Store) -> None:
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage, capacity=1)
    a, b = _studies(store, 2)
    caches.get_all_trials(a)
    first = weakref.ref(caches.cache_of(a))
    opened.caches.clear()
    caches.get_all_trials(b)
    gc.collect()
    assert first() is None


def test_reads_match_the_storage_itself(store: Store) -> None:
    caches = StudyCaches(lambda: optuna.storages.get_storage(store.storage), store.storage)
    (a,) = _studies(store, 1, trials=3)
    plain = store.storage
    assert caches.get_study_name_from_id(a) == plain.get_study_name_from_id(a) == "caches-0"
    assert caches.get_study_directions(a) == [StudyDirection.MINIMIZE]
    assert caches.get_study_id_from_name("caches-0") == a
    assert [(t.number, t.value, t.params) for t in caches.get_all_trials(a)] == [
        (t.number, t.value, t.params) for t in plain.get_all_trials(a)
    ]
    assert caches.get_best_trial(a).value == 0.0
    trial_id = caches.get_trial_id_from_study_id_trial_number(a, 2)
    assert caches.get_trial(trial_id).value == 2.0
    caches.set_study_user_attr(a, "note", "kept")
    assert plain.get_study_user_attrs(a)["note"] == "kept"
    assert [s.study_name for s in caches.get_all_studies()] == ["caches-0"]


def test_a_trial_is_written_after_its_study_s_cache_was_dropped(store: Store) -> None:
    """Optuna's cache refuses a param of a trial it does not know: such writes go to the
    storage itself."""
    caches = StudyCaches(
        lambda: optuna.storages.get_storage(store.storage), store.storage, capacity=1
    )
    a, b = _studies(store, 2)
    running = caches.create_new_trial(a)
    caches.set_trial_param(running, "lr", LR.to_internal_repr(0.02), LR)
    caches.get_all_trials(b)  # drops a's cache, which created the trial
    assert caches.cached_studies() == [b]

    caches.set_trial_param(running, "wd", 0.5, FloatDistribution(0.0, 1.0))
    caches.set_trial_intermediate_value(running, 1, 0.25)
    caches.set_trial_user_attr(running, "u", 1)
    caches.set_trial_system_attr(running, "s", 2)
    assert caches.set_trial_state_values(running, TrialState.COMPLETE, [0.5])

    stored = store.storage.get_trial(running)
    assert stored.params == {"lr": 0.02, "wd": 0.5}
    assert (stored.state, stored.value, stored.intermediate_values) == (
        TrialState.COMPLETE,
        0.5,
        {1: 0.25},
    )
    assert (stored.user_attrs, stored.system_attrs) == ({"u": 1}, {"s": 2})
    assert [t.value for t in caches.get_all_trials(a)] == [0.0, 1.0, 0.5]


def test_a_trial_created_through_its_study_s_cache_is_known_to_it(store: Store) -> None:
    caches = StudyCaches(lambda: optuna.storages.get_storage(store.storage), store.storage)
    (a,) = _studies(store, 1)
    running = caches.create_new_trial(a)
    caches.set_trial_param(running, "lr", LR.to_internal_repr(0.03), LR)
    assert caches.set_trial_state_values(running, TrialState.COMPLETE, [3.0])
    assert caches.get_trial(running).params == {"lr": 0.03}
    assert [t.value for t in caches.get_all_trials(a, states=(TrialState.COMPLETE,))] == [
        0.0,
        1.0,
        3.0,
    ]


def test_deleting_a_study_drops_its_cache(store: Store) -> None:
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage, close=opened.close)
    a, b = _studies(store, 2)
    caches.get_all_trials(a)
    caches.get_all_trials(b)
    cache_of_a = caches.cache_of(a)
    caches.delete_study(a)
    assert caches.cached_studies() == [b]
    assert opened.closed == [cache_of_a]
    with pytest.raises(KeyError):
        store.storage.get_study_name_from_id(a)


def test_close_drops_every_cache(store: Store) -> None:
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage, close=opened.close)
    a, b = _studies(store, 2)
    caches.get_all_trials(a)
    caches.get_all_trials(b)
    caches.close()
    assert caches.cached_studies() == [] and opened.closed == opened.caches


def test_only_reading_a_study_s_trials_opens_its_cache(store: Store) -> None:
    """A few reads about another study (a test-split evaluation, a refit) must not push
    out the cache of the study being searched."""
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage, capacity=1)
    a, b = _studies(store, 2)
    caches.get_all_trials(a)
    opened.calls.clear()

    assert caches.get_study_name_from_id(b) == "caches-1"
    assert caches.get_study_directions(b) == [StudyDirection.MINIMIZE]
    assert caches.get_study_user_attrs(b) == {} and caches.get_study_system_attrs(b) == {}
    trial_id = caches.get_trial_id_from_study_id_trial_number(b, 1)
    assert caches.get_trial(trial_id).value == 1.0
    assert caches.get_best_trial(b).value == 0.0
    assert caches.get_n_trials(b) == 2
    caches.set_study_user_attr(b, "k", 1)

    assert caches.cached_studies() == [a] and opened.calls == []


def test_calls_about_a_cached_study_go_to_its_cache_and_trial_writes_do_not(
    store: Store,
) -> None:
    opened = Opened(store)
    caches = StudyCaches(opened.open, store.storage)
    (a,) = _studies(store, 1)
    caches.get_all_trials(a)
    opened.calls.clear()

    caches.get_study_name_from_id(a)
    caches.get_study_directions(a)
    caches.get_trial_id_from_study_id_trial_number(a, 0)
    running = caches.create_new_trial(a)
    assert opened.calls == [
        "get_study_name_from_id",
        "get_study_directions",
        "get_trial_id_from_study_id_trial_number",
        "create_new_trial",
    ]
    opened.calls.clear()
    caches.set_trial_param(running, "lr", LR.to_internal_repr(0.02), LR)
    caches.set_trial_state_values(running, TrialState.COMPLETE, [0.5])
    assert caches.get_trial(running).value == 0.5
    assert opened.calls == []  # Optuna's cache forwards these: they go to the storage


def test_a_study_that_is_gone_keeps_no_cache(store: Store) -> None:
    caches = StudyCaches(lambda: optuna.storages.get_storage(store.storage), store.storage)
    (a,) = _studies(store, 1)
    caches.get_all_trials(a)
    with pytest.raises(KeyError):
        caches.get_all_trials(a + 1000)
    assert caches.cached_studies() == [a]


def test_a_capacity_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        StudyCaches(lambda: store.storage, store.storage, capacity=0)
