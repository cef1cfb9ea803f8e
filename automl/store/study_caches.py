"""A worker's Optuna storage with a cache of finished trials per study.

Samplers and pruners read every trial of a study before each trial, so a worker keeps
the finished ones in memory (Optuna's own cache: ``optuna.storages.get_storage`` on the
database, ``GrpcStorageProxy`` through ``automl proxy``). One cache for every study grows
with every study the worker ever served; starting it over once too many were served made
the worker read each of them again, a study of thousands of trials taking many seconds.
Here each study has a cache of its own: past ``CACHED_STUDIES`` the one read least
recently is dropped, and the others stay.

A study gets a cache when its trials are read or a trial is created in it (what a worker
does for every trial it runs); calls about a study go to its cache while it has one, and
otherwise to the uncached storage, so that a few reads about another study (a test-split
evaluation, a refit) do not push out the cache of one being searched. Calls about a trial
go to the cache of the study it was created in while that cache is kept, and otherwise to
the uncached storage (reading a trial is one query; writes to a trial Optuna's cache does
not know must not go through it). Calls about no study in particular go to the uncached
storage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

CACHED_STUDIES = 16
"""Studies whose finished trials a worker keeps in memory. A worker serves one study per
project at a time (``automl.store.leases``), so this is about the projects it can rotate
between without reading a study again."""


class StudyCaches(BaseStorage):
    """Optuna storage whose finished trials are cached per study (see the module docstring).

    Args:
        open_cache: Opens an empty cache on the same storage (one per study).
        uncached: The storage itself, for calls that are about no cached study.
        capacity: How many studies keep their cache (``CACHED_STUDIES`` if None).
        close: Called with each cache that is dropped (e.g. to close its channel).
    """

    def __init__(
        self,
        open_cache: Callable[[], BaseStorage],
        uncached: BaseStorage,
        capacity: int | None = None,
        close: Callable[[BaseStorage], None] | None = None,
    ) -> None:
        capacity = CACHED_STUDIES if capacity is None else capacity
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.uncached = uncached
        self._open_cache = open_cache
        self._close = close
        self._capacity = capacity
        self._caches: OrderedDict[int, BaseStorage] = OrderedDict()
        self._study_of: dict[int, int] = {}  # trials created here -> their study
        self._lock = threading.Lock()

    def cached_studies(self) -> list[int]:
        """The studies that have a cache, the one read least recently first."""
        with self._lock:
            return list(self._caches)

    def cache_of(self, study_id: int) -> BaseStorage:
        """The study's cache, opened if it has none (the one read least recently is then
        dropped if ``capacity`` studies have one)."""
        dropped: list[BaseStorage] = []
        with self._lock:
            cache = self._caches.get(study_id)
            if cache is not None:
                self._caches.move_to_end(study_id)
                return cache
            while len(self._caches) >= self._capacity:
                old_study, old = self._caches.popitem(last=False)
                self._forget_trials_of(old_study)
                dropped.append(old)
            cache = self._caches[study_id] = self._open_cache()
        for old in dropped:
            self._closed(old)
        return cache

    def close(self) -> None:
        """Drops every cache (closing each, as dropping one does)."""
        with self._lock:
            dropped = list(self._caches.values())
            self._caches.clear()
            self._study_of.clear()
        for cache in dropped:
            self._closed(cache)

    def _closed(self, cache: BaseStorage) -> None:
        if self._close is not None:
            self._close(cache)

    def _forget_trials_of(self, study_id: int) -> None:
        for trial_id in [t for t, s in self._study_of.items() if s == study_id]:
            del self._study_of[trial_id]

    def _for_study(self, study_id: int) -> BaseStorage:
        """The study's cache, if it has one; else the uncached storage."""
        with self._lock:
            cache = self._caches.get(study_id)
        return self.uncached if cache is None else cache

    def _for_trial(self, trial_id: int) -> BaseStorage:
        """The cache that created the trial, if it is kept; else the uncached storage."""
        with self._lock:
            study_id = self._study_of.get(trial_id)
            cache = None if study_id is None else self._caches.get(study_id)
        return self.uncached if cache is None else cache

    # --- studies ------------------------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        """See ``BaseStorage``."""
        return self.uncached.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        """See ``BaseStorage``; the study's cache is dropped too."""
        with self._lock:
            cache = self._caches.pop(study_id, None)
            self._forget_trials_of(study_id)
        (cache or self.uncached).delete_study(study_id)
        if cache is not None:
            self._closed(cache)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_study(study_id).set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_study(study_id).set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        """See ``BaseStorage``."""
        return self.uncached.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        """See ``BaseStorage``."""
        return self.uncached.get_all_studies()

    # --- trials -------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """See ``BaseStorage``; created through the study's cache, so that it knows it."""
        cache = self.cache_of(study_id)
        trial_id = cache.create_new_trial(study_id, template_trial)
        with self._lock:
            if self._caches.get(study_id) is cache:
                self._study_of[trial_id] = study_id
        return trial_id

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """See ``BaseStorage``."""
        return self.cache_of(study_id).get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_trial_id_from_study_id_trial_number(
            study_id, trial_number
        )

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_best_trial(study_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """See ``BaseStorage``."""
        return self._for_trial(trial_id).get_trial(trial_id)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        """See ``BaseStorage``."""
        self._for_trial(trial_id).set_trial_param(
            trial_id, param_name, param_value_internal, distribution
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        """See ``BaseStorage``; a trial that ends is no longer routed (its cache, if kept,
        reads it like any other finished trial)."""
        updated = self._for_trial(trial_id).set_trial_state_values(trial_id, state, values)
        if state.is_finished():
            with self._lock:
                self._study_of.pop(trial_id, None)
        return updated

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """See ``BaseStorage``."""
        self._for_trial(trial_id).set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_trial(trial_id).set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_trial(trial_id).set_trial_system_attr(trial_id, key, value)


__all__ = ["CACHED_STUDIES", "StudyCaches"]
