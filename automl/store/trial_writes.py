"""A running trial's writes, gathered and applied in one transaction.

Optuna's storage writes each param, report and attribute in its own transaction (and,
through ``automl proxy``, its own round trip). A worker that buffers them (see
``automl.store.trial_buffer``) hands them over as one ``TrialWrites``, applied by
``write_trial``: all of them or, if the trial is no longer RUNNING, none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automl.store import optuna_rows
from automl.store.leases import Lease, record_trial_in
from automl.store.storage import Store
from automl.store.study_reads import StudyNotFoundError


@dataclass
class TrialWrites:
    """Writes to one running trial; a later value of the same key replaces an earlier one.

    Attributes:
        params: Param name -> (internal value, distribution JSON), in suggestion order.
        steps: Step -> intermediate value.
        user_attrs: User attributes.
        system_attrs: System attributes.
    """

    params: dict[str, tuple[float, str]] = field(default_factory=dict)
    steps: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.params or self.steps or self.user_attrs or self.system_attrs)

    def then(self, later: TrialWrites) -> TrialWrites:
        """These writes followed by ``later`` ones (``later`` wins on the same key)."""
        return TrialWrites(
            params={**self.params, **later.params},
            steps={**self.steps, **later.steps},
            user_attrs={**self.user_attrs, **later.user_attrs},
            system_attrs={**self.system_attrs, **later.system_attrs},
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object (``from_json`` reads it back)."""
        return {
            "params": {name: list(value) for name, value in self.params.items()},
            "steps": {str(step): value for step, value in self.steps.items()},
            "user_attrs": self.user_attrs,
            "system_attrs": self.system_attrs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialWrites:
        """The writes ``to_json`` wrote.

        Raises:
            ValueError: If ``data`` is not such an object.
        """
        try:
            return cls(
                params={str(k): (float(v), str(d)) for k, (v, d) in data["params"].items()},
                steps={int(step): float(value) for step, value in data["steps"].items()},
                user_attrs=dict(data["user_attrs"]),
                system_attrs=dict(data["system_attrs"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed trial writes: {exc}") from None


def writes_from_json(data: dict[str, Any] | None) -> dict[int, TrialWrites]:
    """Trial id -> writes, from what ``BufferedTrialStorage.pending_writes`` yields (a
    coordination call's ``writes``; None or empty: none).

    Raises:
        ValueError: If ``data`` is not such an object.
    """
    try:
        return {int(trial_id): TrialWrites.from_json(d) for trial_id, d in (data or {}).items()}
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"malformed trial writes: {exc}") from None


def write_trial(store: Store, trial_id: int, writes: TrialWrites) -> None:
    """Applies ``writes`` to a running trial in one transaction (nothing if empty).

    Raises:
        UpdateFinishedTrialError: If the trial already ended (a reaper failed it); nothing
            was written, as Optuna's setters would refuse.
        ValueError: If a param's distribution conflicts with the study's.
    """
    if writes:
        write_trials(store, {trial_id: writes})


def _put(
    connection: sa.engine.Connection,
    trial_id: int,
    writes: TrialWrites,
    end: tuple[TrialState, list[float] | None] | None = None,
) -> bool:
    return optuna_rows.put_running_trial_writes(
        connection,
        trial_id,
        params=writes.params,
        steps=writes.steps,
        user_attrs=writes.user_attrs,
        system_attrs=writes.system_attrs,
        end=end,
    )


def apply_writes(
    connection: sa.engine.Connection,
    writes: dict[int, TrialWrites],
    *,
    ignore_finished: bool = False,
) -> None:
    """``write_trials`` in the caller's transaction (as ``write_trial``, trial by trial).

    Raises:
        UpdateFinishedTrialError: If a trial already ended (unless ``ignore_finished``).
        ValueError: If a param's distribution conflicts with the study's.
    """
    for trial_id, trial_writes in writes.items():
        if not _put(connection, trial_id, trial_writes) and not ignore_finished:
            raise UpdateFinishedTrialError(f"trial id {trial_id} is no longer running")


def write_trials(
    store: Store, writes: dict[int, TrialWrites], *, ignore_finished: bool = False
) -> None:
    """``apply_writes`` in a transaction of its own (nothing if there are none).

    Args:
        store: The open store.
        writes: Trial id -> its writes.
        ignore_finished: Skip a trial that already ended instead of raising (a heartbeat's
            writes: the trial's tell says so).
    """
    if writes:
        with store.write() as connection:
            apply_writes(connection, writes, ignore_finished=ignore_finished)


def create_trial(
    store: Store,
    storage: BaseStorage,
    study_id: int,
    template: FrozenTrial,
    lease: Lease | None = None,
) -> tuple[int, int]:
    """Creates a trial from ``template``; its id and number.

    A worker's template (RUNNING, attributes and reports, no params or values) is written
    in one short transaction, which also records the trial on ``lease``'s ticket; any
    other goes through ``storage``.

    Raises:
        StudyNotFoundError: If the study does not exist.
        LeaseLostError: If ``lease`` is no longer held (nothing was created).
        ValueError: If a ``lease`` comes with a template that is not a worker's.
    """
    if template.state == TrialState.RUNNING and not template.params and template.values is None:
        with store.write() as connection:
            created = optuna_rows.create_running_trial(
                connection,
                study_id,
                user_attrs=template.user_attrs,
                system_attrs=template.system_attrs,
                steps=template.intermediate_values,
            )
            if created is None:
                raise StudyNotFoundError(study_id)
            if lease is not None:
                record_trial_in(connection, lease, *created)
        return created
    if lease is not None:
        raise ValueError("only a RUNNING template without params or values starts a lease's trial")
    try:
        trial_id = storage.create_new_trial(study_id, template)
    except KeyError:
        raise StudyNotFoundError(study_id) from None
    with store.read() as connection:
        number = optuna_rows.trial_number(connection, trial_id)
    if number is None:  # deleted with its study in between
        raise StudyNotFoundError(study_id)
    return trial_id, number


def tell_trial(
    store: Store,
    storage: BaseStorage,
    trial_id: int,
    state: TrialState,
    values: list[float] | None,
    writes: dict[int, TrialWrites],
) -> bool:
    """Applies a running trial's last writes and ends it: one transaction that checks the
    trial is RUNNING under its row lock (another state than a finished one: the writes,
    then Optuna's ``set_trial_state_values``). If it already ended, nothing is written.

    Returns:
        Whether the state changed (as Optuna's ``set_trial_state_values``).

    Raises:
        UpdateFinishedTrialError: If the trial already ended (nothing is written).
    """
    if not state.is_finished():
        write_trials(store, writes)
        return bool(storage.set_trial_state_values(trial_id, state, values))
    others = {other: w for other, w in writes.items() if other != trial_id}
    with store.write() as connection:
        apply_writes(connection, others)
        ended = _put(connection, trial_id, writes.get(trial_id, TrialWrites()), (state, values))
    if not ended:
        raise UpdateFinishedTrialError(f"trial id {trial_id} is no longer running")
    return True


__all__ = [
    "TrialWrites",
    "apply_writes",
    "create_trial",
    "running_trial_template",
    "tell_trial",
    "write_trial",
    "write_trials",
    "writes_from_json",
]


def running_trial_template(
    user_attrs: dict[str, Any] | None = None,
    system_attrs: dict[str, Any] | None = None,
    intermediate_values: dict[int, float] | None = None,
) -> FrozenTrial:
    """The template of a new RUNNING trial, as ``storage.create_new_trial`` takes it
    (number and id are assigned by the storage)."""
    return FrozenTrial(
        number=0,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs=dict(user_attrs or {}),
        system_attrs=dict(system_attrs or {}),
        intermediate_values=dict(intermediate_values or {}),
        trial_id=0,
    )
