"""One study's finished trials in a worker's memory, without their bulky attributes.

Samplers and pruners read every trial of a study before each trial, so workers (and
``automl proxy``) keep the finished ones (``automl.store.study_caches``). Optuna's own
cache keeps each trial whole, every user attribute included: the per-epoch history alone
is about 150 KB of JSON a trial at 500 epochs (260 KB once parsed), so a study of 1,000
such trials took a worker 2 GB, and its first read 42 s. What a search reads of a trial is
its params, values, per-epoch objective values, state and system attributes (and automl's
small attributes, e.g. the data it trained on): this cache keeps those and leaves out
the attributes only people read (``LEFT_OUT``), which the API and the dashboard read from
the database.

Finished trials never change what a search reads, so each is read once; the study's
running trials are read again on every call, as Optuna's cache does.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl.store import attrs, optuna_rows
from automl.store.storage import Store

if TYPE_CHECKING:  # Optuna names no public module for it
    from optuna.study._frozen import FrozenStudy

LEFT_OUT = frozenset(
    {
        attrs.HISTORY,
        attrs.PER_CLASS,
        attrs.CONFUSION,
        attrs.MOST_CONFUSED,
        attrs.TEST_PER_CLASS,
        attrs.TEST_CONFUSION,
        attrs.TEST_MOST_CONFUSED,
    }
)
"""Trial attributes the cache leaves out: they grow with the epochs or the classes, and
no sampler, pruner or worker check reads them."""


class LeanTrialCache(BaseStorage):
    """Optuna storage over the database whose ``get_all_trials`` keeps the finished trials
    it read, without ``LEFT_OUT``; every other call goes to the database.

    Args:
        store: The open store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backend: BaseStorage = store.storage
        self._finished: dict[int, FrozenTrial] = {}
        self._directions: dict[int, list[StudyDirection]] = {}
        self._lock = threading.Lock()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """See ``BaseStorage``: the study's trials in number order, the finished ones from
        memory (without ``LEFT_OUT``), in three queries whatever their number (the running
        ones and those finished since the last call read again).

        Raises:
            KeyError: If the study does not exist.
        """
        with self.store.read() as connection:
            numbers = optuna_rows.trial_numbers(connection, study_id)
            if not numbers:
                self.backend.get_study_directions(study_id)  # KeyError if it is gone
            with self._lock:
                missing = [trial_id for trial_id in numbers if trial_id not in self._finished]
            loaded = optuna_rows.load_trials(
                connection, missing, leave_out=LEFT_OUT, system_attrs=True
            )
        id_of = {number: trial_id for trial_id, number in numbers.items()}
        fresh = {id_of[trial.number]: trial for trial in loaded}
        with self._lock:
            for trial_id, trial in fresh.items():
                if trial.state.is_finished():
                    self._finished[trial_id] = trial
            found = [
                fresh.get(trial_id) or self._finished[trial_id]
                for trial_id in numbers
                if trial_id in fresh or trial_id in self._finished
            ]
        found.sort(key=lambda trial: trial.number)
        if states is not None:
            found = [trial for trial in found if trial.state in states]
        return copy.deepcopy(found) if deepcopy else found

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """See ``BaseStorage`` (read once: a study's directions never change)."""
        with self._lock:
            known = self._directions.get(study_id)
        if known is None:
            known = self.backend.get_study_directions(study_id)
            with self._lock:
                self._directions[study_id] = known
        return list(known)

    # --- everything else: the database -------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        """See ``BaseStorage``."""
        return self.backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        """See ``BaseStorage``."""
        self.backend.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self.backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self.backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        """See ``BaseStorage``."""
        return self.backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        """See ``BaseStorage``."""
        return self.backend.get_study_name_from_id(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self.backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self.backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        """See ``BaseStorage``."""
        return self.backend.get_all_studies()

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """See ``BaseStorage``."""
        return self.backend.create_new_trial(study_id, template_trial)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        """See ``BaseStorage``."""
        self.backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        """See ``BaseStorage``."""
        return self.backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        """See ``BaseStorage``."""
        return self.backend.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """See ``BaseStorage``."""
        self.backend.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self.backend.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """See ``BaseStorage``."""
        self.backend.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """See ``BaseStorage`` (whole, from the database)."""
        return self.backend.get_trial(trial_id)


__all__ = ["LEFT_OUT", "LeanTrialCache"]
