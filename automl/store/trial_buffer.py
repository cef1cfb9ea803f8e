"""A worker's Optuna storage that keeps its running trial local: few writes per trial.

Through Optuna's storage alone, every suggested param, report, attribute and read of the
running trial is its own transaction (and, through ``automl proxy``, its own round trip):
about 100 statements per trial on the database, of which reading the running trial back
is a third. This storage keeps the trial the worker creates (while it runs) as a local
copy and buffers its writes:

- reading such a trial is served from the copy (it holds the buffered writes too);
- writes wait and travel with the next coordination call of that trial's lease (params
  with ``record_params``, reports and attributes with the heartbeat, results, the tell or
  the release), applied in one transaction, all or none, and only while the trial is
  still RUNNING: a trial the reaper ended rejects them, as Optuna's setters would (the
  state change a tell or release makes follows in a second transaction, which checks the
  state again under the row lock);
- reading the study's trials (RUNNING ones included) first sends the buffered writes, so
  samplers see them;
- a worker runs one trial at a time: creating a trial drops the copies of earlier ones,
  and once a call says the lease or the trial is gone, that trial's copy is dropped and
  its reads and writes go to the backend again;
- writes refused for a lasting reason (a param's distribution conflicts) during a
  heartbeat are not lost silently: the trial's next ``record_params`` or tell raises it,
  so the trial fails as it would through Optuna's storage directly.

Everything else (studies, other trials) goes to the backend unchanged. The coordinator
that owns the storage carries the writes: ``automl.worker.coordinator.SqlCoordinator``
on the database, ``automl.proxy.RemoteCoordinator`` through ``automl proxy``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automl.store.delegating import DelegatingStorage
from automl.store.faults import is_transient
from automl.store.leases import Lease, LeaseLostError
from automl.store.trial_writes import TrialWrites, running_trial_template

Call = Callable[[str, dict[str, Any]], tuple[dict[str, Any], bytes]]
"""A coordination call: method and header in, reply header and payload out."""


class BufferedTrialStorage(DelegatingStorage):
    """Optuna storage of a worker (see the module docstring).

    Args:
        backend: The Optuna storage everything else goes to (the database's, or the
            proxy's gRPC client).
        call: The coordination call that creates, writes and tells the trials this
            storage keeps (methods ``create_trial``, ``write_trial``, ``tell_trial``).
    """

    not_refusals: tuple[type[Exception], ...] = ()
    """Failures of a call that say nothing about its writes (kept for the next call)."""

    def __init__(
        self, backend: BaseStorage, call: Call, untracked: BaseStorage | None = None
    ) -> None:
        super().__init__(backend)
        self._untracked = untracked or backend
        self._call = call
        self._running: dict[int, FrozenTrial] = {}
        self._pending: dict[int, TrialWrites] = {}
        self._study_of: dict[int, int] = {}  # study of each local copy
        self._trial_of: dict[tuple[int, int], int] = {}  # (ticket, attempt) -> its trial
        self._refused: dict[int, Exception] = {}  # a lasting refusal, raised at the next step
        self._lock = threading.Lock()  # guards the dicts
        self._sending = threading.Lock()  # one call with writes in flight at a time

    # --- what the coordination calls carry --------------------------------------------------

    def trial_of(self, ticket_id: int, attempt: int) -> int | None:
        """The trial the lease of ``ticket_id``'s ``attempt`` runs, if known."""
        with self._lock:
            return self._trial_of.get((ticket_id, attempt))

    @contextmanager
    def pending_writes(self, trial_id: int | None) -> Iterator[dict[str, Any]]:
        """The buffered writes of one trial, as the ``writes`` of one coordination call.

        Held while the call runs, so writes arrive in order. If the call fails
        for a transient reason they are kept for the next one. If it says the trial ended
        or the lease was lost, the trial's copy is dropped. Any other failure is a lasting
        refusal: the writes are dropped and the trial's next step raises it (see
        ``raise_refusal``).

        Args:
            trial_id: The trial (None: a call that carries no writes).
        """
        with self._sending, self._taken(trial_id) as writes:
            yield writes

    @contextmanager
    def _taken(self, trial_id: int | None) -> Iterator[dict[str, Any]]:
        """``pending_writes`` with ``_sending`` already held."""
        with self._lock:
            taken = None if trial_id is None else self._pending.pop(trial_id, None)
        try:
            yield {str(trial_id): taken.to_json()} if taken else {}
        except BaseException as exc:
            if trial_id is None:
                raise
            if is_transient(exc):
                if taken:
                    self._restore(trial_id, taken)
            elif isinstance(exc, (LeaseLostError, UpdateFinishedTrialError)):
                self.forget(trial_id)
            elif taken and isinstance(exc, Exception) and not isinstance(exc, self.not_refusals):
                with self._lock:
                    if trial_id in self._running:
                        self._refused[trial_id] = exc
            raise

    def raise_refusal(self, trial_id: int) -> None:
        """Raises (once) the lasting refusal the trial's writes met in a heartbeat, if any."""
        with self._lock:
            refused = self._refused.pop(trial_id, None)
        if refused is not None:
            raise refused

    def stage_user_attrs(self, trial_id: int, user_attrs: dict[str, Any]) -> bool:
        """Buffers user attributes of a trial this worker runs, to travel with its next
        call (the tell, at the latest); False if the trial is not kept here.

        Raises:
            UpdateFinishedTrialError: If the trial already ended.
        """
        stored = _json_copy(user_attrs)

        def change(trial: FrozenTrial, writes: TrialWrites) -> None:
            trial.user_attrs.update(stored)
            writes.user_attrs.update(stored)

        return self._buffer(trial_id, change)

    def forget(self, trial_id: int) -> None:
        """Drops a trial's local copy and buffered writes (its lease or the trial is gone)."""
        with self._lock:
            self._drop(trial_id)

    def _drop(self, trial_id: int) -> None:
        self._running.pop(trial_id, None)
        self._pending.pop(trial_id, None)
        self._study_of.pop(trial_id, None)
        self._refused.pop(trial_id, None)
        for lease in [k for k, trial in self._trial_of.items() if trial == trial_id]:
            del self._trial_of[lease]

    def _restore(self, trial_id: int, taken: TrialWrites) -> None:
        # Writes made while the call was in flight come later, so they win.
        with self._lock:
            if trial_id in self._running:
                later = self._pending.get(trial_id, TrialWrites())
                self._pending[trial_id] = taken.then(later)

    def _buffer(self, trial_id: int, change: Callable[[FrozenTrial, TrialWrites], None]) -> bool:
        """Applies a write to the local copy and buffers it; False if not tracked."""
        with self._lock:
            trial = self._running.get(trial_id)
            if trial is None:
                return False
            if trial.state.is_finished():
                raise UpdateFinishedTrialError(f"trial {trial.number} is already finished")
            change(trial, self._pending.setdefault(trial_id, TrialWrites()))
            return True

    def _send_pending(self, study_id: int) -> None:
        # Under ``_sending``: a heartbeat whose call is in flight has taken the writes out
        # of the buffer; waiting for it means the read that follows sees them.
        with self._sending:
            with self._lock:
                waiting = [
                    trial_id
                    for trial_id, writes in self._pending.items()
                    if writes and self._study_of.get(trial_id) == study_id
                ]
            for trial_id in waiting:
                with self._taken(trial_id) as writes:
                    self._call("write_trial", {"writes": writes})

    # --- trials ------------------------------------------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """Creates the trial (one call, which also returns its number)."""
        return self.start_trial(study_id, template_trial or running_trial_template())

    def start_trial(self, study_id: int, template: FrozenTrial, lease: Lease | None = None) -> int:
        """Creates a trial (one call, which also returns its number) and, with ``lease``,
        records it on the lease's ticket in the same transaction: the trial's writes ride
        on the lease's calls from then on.

        Raises:
            LeaseLostError: If the lease is no longer held (no trial was created).
        """
        header: dict[str, Any] = {"study_id": study_id, "template": template_to_wire(template)}
        if lease is not None:
            header["lease"] = dataclasses.asdict(lease)
        reply, _ = self._call("create_trial", header)
        trial_id, number = int(reply["trial_id"]), int(reply["number"])
        if template.state == TrialState.RUNNING:
            local = _copy_as(template, trial_id, number)
            with self._lock:
                # One running trial per worker: whatever an earlier one left is stale.
                for old in list(self._running):
                    self._drop(old)
                self._trial_of.clear()
                self._running[trial_id] = local
                self._study_of[trial_id] = study_id
                if lease is not None:
                    self._trial_of[(lease.ticket_id, lease.attempt)] = trial_id
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """The local copy of a trial this worker runs, else the backend's."""
        with self._lock:
            trial = self._running.get(trial_id)
            if trial is not None:
                return _snapshot(trial, trial_id)
        return self.backend.get_trial(trial_id)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        """Buffered for a trial this worker runs (sent with ``record_params``)."""

        def change(trial: FrozenTrial, writes: TrialWrites) -> None:
            if param_name in trial.distributions:
                check_distribution_compatibility(trial.distributions[param_name], distribution)
            trial.params[param_name] = distribution.to_external_repr(param_value_internal)
            trial.distributions[param_name] = distribution
            writes.params[param_name] = (
                float(param_value_internal),
                distribution_to_json(distribution),
            )

        if not self._buffer(trial_id, change):
            untracked = self._untracked
            untracked.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        """Buffered for a trial this worker runs (sent with the next heartbeat)."""

        def change(trial: FrozenTrial, writes: TrialWrites) -> None:
            trial.intermediate_values[step] = intermediate_value
            writes.steps[step] = intermediate_value

        if not self._buffer(trial_id, change):
            self._untracked.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Buffered for a trial this worker runs."""
        stored = _json_copy(value)

        def change(trial: FrozenTrial, writes: TrialWrites) -> None:
            trial.user_attrs[key] = stored
            writes.user_attrs[key] = stored

        if not self._buffer(trial_id, change):
            self._untracked.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """Buffered for a trial this worker runs."""
        stored = _json_copy(value)

        def change(trial: FrozenTrial, writes: TrialWrites) -> None:
            trial.system_attrs[key] = stored
            writes.system_attrs[key] = stored

        if not self._buffer(trial_id, change):
            self._untracked.set_trial_system_attr(trial_id, key, value)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        """For a trial this worker runs: its buffered writes and the new state in one call
        (applied as two transactions, each checking the trial is RUNNING).

        Raises:
            UpdateFinishedTrialError: If the trial already ended (nothing is written).
        """
        with self._lock:
            tracked = trial_id in self._running
        if not tracked:
            return self._untracked.set_trial_state_values(trial_id, state, values)
        if state != TrialState.FAIL:
            self.raise_refusal(trial_id)
        header: dict[str, Any] = {
            "trial_id": trial_id,
            "state": state.name,
            "values": None if values is None else [float(v) for v in values],
        }
        with self.pending_writes(trial_id) as writes:
            reply, _ = self._call("tell_trial", {**header, "writes": writes})
        with self._lock:
            trial = self._running.get(trial_id)
            if trial is not None and reply["updated"]:
                trial.state = state
                trial.values = None if values is None else list(values)
                if state.is_finished():
                    trial.datetime_complete = datetime.now()
        return bool(reply["updated"])

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        """The backend's trials of the study, after sending this worker's buffered writes
        (only a read that includes RUNNING trials can see them)."""
        if states is None or TrialState.RUNNING in states:
            self._send_pending(study_id)
        return self.backend.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    # Studies, and trial ids by number: straight to the backend (``DelegatingStorage``).


def template_to_wire(trial: FrozenTrial) -> dict[str, Any]:
    """A trial template (what ``create_new_trial`` takes) as a JSON object."""
    return {
        "state": trial.state.name,
        "values": trial.values,
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
        "params": {
            name: [dist.to_internal_repr(trial.params[name]), distribution_to_json(dist)]
            for name, dist in trial.distributions.items()
        },
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
        "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
    }


def template_from_wire(data: dict[str, Any]) -> FrozenTrial:
    """The template ``template_to_wire`` wrote (number and id are placeholders).

    Raises:
        ValueError: If ``data`` is not such an object.
    """
    try:
        distributions = {name: json_to_distribution(d) for name, (_, d) in data["params"].items()}
        return FrozenTrial(
            number=0,
            state=TrialState[data["state"]],
            value=None,
            values=data["values"],
            datetime_start=_from_iso(data["datetime_start"]),
            datetime_complete=_from_iso(data["datetime_complete"]),
            params={
                name: distributions[name].to_external_repr(v)
                for name, (v, _) in data["params"].items()
            },
            distributions=distributions,
            user_attrs=dict(data["user_attrs"]),
            system_attrs=dict(data["system_attrs"]),
            intermediate_values={int(k): float(v) for k, v in data["intermediate_values"].items()},
            trial_id=0,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed trial template: {exc}") from None


def _copy_as(template: FrozenTrial, trial_id: int, number: int) -> FrozenTrial:
    started = template.datetime_start or datetime.now()
    return _copied(template, trial_id, number, started, copy_attrs=_json_copy)


def _snapshot(trial: FrozenTrial, trial_id: int) -> FrozenTrial:
    """An independent copy of a local trial. Its attributes hold only what JSON holds (the
    setters store them so), so copying their dicts and lists suffices: several times
    faster than ``copy.deepcopy``, which the worker paid four times a trial."""
    return _copied(trial, trial_id, trial.number, trial.datetime_start, copy_attrs=_tree_copy)


def _copied(
    trial: FrozenTrial,
    trial_id: int,
    number: int,
    started: datetime | None,
    copy_attrs: Callable[[Any], Any],
) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=trial.state,
        value=None,
        values=None if trial.values is None else list(trial.values),
        datetime_start=started,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=copy_attrs(trial.user_attrs),
        system_attrs=copy_attrs(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial_id,
    )


def _tree_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _tree_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tree_copy(item) for item in value]
    return value  # str, int, float, bool or None: immutable


def _json_copy(value: Any) -> Any:
    # What reading it back from the database gives (tuples become lists, ...); raises as
    # Optuna's setters do for a value JSON cannot hold.
    return json.loads(json.dumps(value))


def _iso(moment: datetime | None) -> str | None:
    # With its UTC offset (a naive time is this machine's local time, as in Optuna's
    # trials), so a proxy in another time zone reads the same moment.
    return None if moment is None else moment.astimezone().isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


__all__ = ["BufferedTrialStorage", "template_from_wire", "template_to_wire"]
