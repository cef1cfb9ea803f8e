"""A worker's Optuna storage with a cache of finished trials per study.

Samplers and pruners read every trial of a study before each trial, so a worker keeps
the finished ones in memory (``automl.store.LeanTrialCache`` on the database, without the
attributes that grow with the epochs or the classes; Optuna's ``GrpcStorageProxy`` through
``automl proxy``, which serves lean trials). One cache for every study grows
with every study the worker ever served; starting it over once too many were served made
the worker read each of them again, a study of thousands of trials taking many seconds.
Here each study has a cache of its own: past ``CACHED_STUDIES`` the one read least
recently is dropped, and the others stay.

A study gets a cache when its trials are read (what a worker's sampler does before every
trial); other calls about a study go to its cache while it has one, and otherwise to the
uncached storage, so that a few reads about another study (a test-split evaluation, a
refit) do not push out the cache of one being searched. Calls about one trial, and about
no study in particular, go to the uncached storage: a cache keeps finished trials only and
forwards every write to a trial, so it would save nothing there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.store.delegating import DelegatingStorage

if TYPE_CHECKING:  # Optuna names no public module for it
    pass

CACHED_STUDIES = 16
"""Studies whose finished trials a worker keeps in memory. A worker serves one study per
project at a time (``automl.store.leases``), so this is about the projects it can rotate
between without reading a study again."""


class StudyCaches(DelegatingStorage):
    """Optuna storage whose finished trials are cached per study (see the module docstring).

    Args:
        open_cache: Opens an empty cache on the same storage (one per study).
        uncached: The storage itself, for calls that are about no cached study. (Optuna's
            gRPC client keeps every study whose trials it reads: here only through
            ``get_best_trial`` and ``get_n_trials`` of a study without a cache, which
            workers do not call.)
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
        super().__init__(uncached)
        self.uncached = uncached
        self._open_cache = open_cache
        self._close = close
        self._capacity = capacity
        self._caches: OrderedDict[int, BaseStorage] = OrderedDict()
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
                dropped.append(self._caches.popitem(last=False)[1])
            cache = self._caches[study_id] = self._open_cache()
        for old in dropped:
            self._closed(old)
        return cache

    def close(self) -> None:
        """Drops every cache (closing each, as dropping one does)."""
        with self._lock:
            dropped = list(self._caches.values())
            self._caches.clear()
        for cache in dropped:
            self._closed(cache)

    def _closed(self, cache: BaseStorage) -> None:
        if self._close is not None:
            self._close(cache)

    def cached(self, study_id: int) -> BaseStorage | None:
        """The study's cache, if it has one (opening none)."""
        with self._lock:
            return self._caches.get(study_id)

    def _for_study(self, study_id: int) -> BaseStorage:
        """The study's cache, if it has one; else the uncached storage."""
        cache = self.cached(study_id)
        return self.uncached if cache is None else cache

    def _drop(self, study_id: int) -> None:
        with self._lock:
            cache = self._caches.pop(study_id, None)
        if cache is not None:
            self._closed(cache)

    # --- about one study: its cache while it has one ---------------------------------------
    # (Anything else, e.g. a call about one trial, goes to ``uncached``: DelegatingStorage.)

    def delete_study(self, study_id: int) -> None:
        """See ``BaseStorage``; the study's cache is dropped too."""
        self._for_study(study_id).delete_study(study_id)
        self._drop(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_study(study_id).set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self._for_study(study_id).set_study_system_attr(study_id, key, value)

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

    # --- trials -------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """See ``BaseStorage``."""
        return self._for_study(study_id).create_new_trial(study_id, template_trial)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """See ``BaseStorage``; opens the study's cache (dropped again if the study is
        gone)."""
        try:
            return self.cache_of(study_id).get_all_trials(
                study_id, deepcopy=deepcopy, states=states
            )
        except KeyError:
            self._drop(study_id)
            raise

    def get_n_trials(
        self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
    ) -> int:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_n_trials(study_id, state)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_trial_id_from_study_id_trial_number(
            study_id, trial_number
        )

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        """See ``BaseStorage``."""
        return self._for_study(study_id).get_best_trial(study_id)


__all__ = ["CACHED_STUDIES", "StudyCaches"]
