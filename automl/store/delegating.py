"""An Optuna storage that hands every call to another: the base of storages that change
a few calls (``LeanTrialCache``, ``BufferedTrialStorage``) and pass the rest on."""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:  # Optuna names no public module for it
    from optuna.study._frozen import FrozenStudy


class DelegatingStorage(BaseStorage):
    """Every ``BaseStorage`` call, made on ``backend``.

    Args:
        backend: The storage the calls go to.
    """

    def __init__(self, backend: BaseStorage) -> None:
        self.backend = backend

    # --- studies ------------------------------------------------------------------------

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

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        """See ``BaseStorage``."""
        return self.backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self.backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """See ``BaseStorage``."""
        return self.backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        """See ``BaseStorage``."""
        return self.backend.get_all_studies()

    # --- trials -------------------------------------------------------------------------

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
        """See ``BaseStorage``."""
        return self.backend.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """See ``BaseStorage``."""
        return self.backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)


__all__ = ["DelegatingStorage"]
