"""What a worker asks of the shared state, behind one small interface.

``Coordinator`` is every call a worker makes about *work* (claim a ticket, beat, record,
finish, release, settle; claim and finish a completed study's test-split evaluation and an
ended study's refit; drop
the weights of trials that fell out of a study's best); the trial itself goes through an
Optuna ``BaseStorage`` and the weights through an artifact store. ``SqlCoordinator``
talks to the database directly; a remote implementation (through a proxy that holds the
database connections) only has to provide the same methods.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from optuna.storages import BaseStorage

from automl.spec import StudySpec
from automl.store import (
    ArtifactStore,
    EvaluationLease,
    EvaluationState,
    FailureKind,
    Lease,
    LeaseLostError,
    LeaseStatus,
    RefitLease,
    RefitResult,
    RefitState,
    Store,
    StudyNotFoundError,
    StudyStatus,
    TrialTestReport,
    beat_refit,
    claim,
    claim_evaluation,
    claim_refit,
    end_due_studies,
    end_study_if_done,
    finish,
    finish_evaluation,
    finish_refit,
    get_status,
    heartbeat,
    read_checkpoint,
    record_checkpoint,
    record_params,
    record_results,
    record_trial,
    release,
    remove_quietly,
    retain_weights,
    submitted_spec,
    write_checkpoint,
)

logger = logging.getLogger("automl.worker")


class CoordinatorTooOldError(RuntimeError):
    """The coordinator lacks a call this worker needs (an older ``automl proxy``).

    Not the ticket's fault: the worker gives the ticket back untouched and stops.
    """


class Coordinator(Protocol):
    """The worker's side of the claim protocol (see ``automl.store.leases``)."""

    storage: BaseStorage
    """Optuna storage for the trials themselves."""
    artifacts: ArtifactStore
    """Where weights go."""

    def claim(self, worker_id: str, study_id: int | None) -> Lease | None:
        """Takes the next unit of work, or None if there is none."""
        ...

    def heartbeat(self, lease: Lease) -> LeaseStatus:
        """Beats; says whether the lease is held and the study still active."""
        ...

    def record_trial(self, lease: Lease, trial_id: int, number: int) -> None:
        """Links the lease's attempt to its Optuna trial (raises ``LeaseLostError``)."""
        ...

    def record_params(self, lease: Lease, params: dict[str, Any]) -> None:
        """Keeps the attempt's params for a retry (raises ``LeaseLostError``)."""
        ...

    def record_results(self, trial_id: int, user_attrs: dict[str, Any]) -> None:
        """Sets a running trial's user attributes in one write (raises
        ``UpdateFinishedTrialError`` if it already ended)."""
        ...

    def save_checkpoint(self, lease: Lease, blob: bytes, epoch: int) -> None:
        """Stores a checkpoint all-or-nothing and makes it the ticket's latest."""
        ...

    def load_checkpoint(self, lease: Lease) -> bytes | None:
        """The checkpoint the lease's ticket resumes from, if any."""
        ...

    def finish(self, lease: Lease, outcome: str, failure: FailureKind | None) -> None:
        """Ends the ticket after its trial was told (raises ``LeaseLostError``)."""
        ...

    def finish_and_settle(
        self, lease: Lease, outcome: str, failure: FailureKind | None, *, retain: bool
    ) -> bool:
        """``finish``, then (each tried once, a failure logged) ``retain_weights`` if
        ``retain`` and ``end_if_done``: a trial's end in one call. Raises as ``finish``;
        returns whether the study was settled (if not, settle it with ``end_if_done``)."""
        ...

    def release(
        self, lease: Lease, failure: FailureKind, error: str, *, requeue: bool = True
    ) -> bool:
        """Gives the ticket back (or, without ``requeue``, ends it failed) and fails its
        attempt's trial; False if the lease was already lost."""
        ...

    def end_if_done(self, study_id: int) -> StudyStatus | None:
        """Ends the study if its work is done; its status (None if it is gone)."""
        ...

    def end_due_studies(self) -> None:
        """Ends every active study whose work is done or whose time ran out."""
        ...

    def retain_weights(self, study_id: int) -> list[int]:
        """Deletes the weights of the study's trials that fell out of its ``keep_weights``
        best (safe to race); the numbers of the trials whose weights this call removed."""
        ...

    def claim_evaluation(self, worker_id: str, study_id: int | None) -> EvaluationLease | None:
        """Claims a completed study's due test-split evaluation, or None if none is due."""
        ...

    def finish_evaluation(
        self,
        lease: EvaluationLease,
        state: EvaluationState,
        reports: Sequence[TrialTestReport],
        note: str | None,
    ) -> bool:
        """Ends the evaluation and stores the trials' test metrics, all or nothing; False
        if the claim was no longer held (nothing stored)."""
        ...

    def claim_refit(self, worker_id: str, study_id: int | None) -> RefitLease | None:
        """Claims an ended study's queued refit, or None if none is due."""
        ...

    def beat_refit(self, lease: RefitLease) -> bool:
        """Renews the refit claim while it trains; False if it is no longer held."""
        ...

    def finish_refit(
        self, lease: RefitLease, state: RefitState, result: RefitResult | None, note: str | None
    ) -> bool:
        """Ends the refit and stores its result, all or nothing; False if the claim was no
        longer held (nothing stored)."""
        ...

    def spec(self, study_id: int) -> StudySpec:
        """The study's spec."""
        ...

    def status(self, study_id: int) -> StudyStatus | None:
        """The study's status (None if it is gone)."""
        ...


class SqlCoordinator:
    """``Coordinator`` on the store's database.

    Args:
        store: The open store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.storage: BaseStorage = store.storage
        self.artifacts: ArtifactStore = store.artifacts

    def claim(self, worker_id: str, study_id: int | None) -> Lease | None:
        """See ``Coordinator.claim``."""
        return claim(self.store, worker_id, study_id)

    def heartbeat(self, lease: Lease) -> LeaseStatus:
        """See ``Coordinator.heartbeat``."""
        return heartbeat(self.store, lease)

    def record_trial(self, lease: Lease, trial_id: int, number: int) -> None:
        """See ``Coordinator.record_trial``."""
        record_trial(self.store, lease, trial_id, number)

    def record_params(self, lease: Lease, params: dict[str, Any]) -> None:
        """See ``Coordinator.record_params``."""
        record_params(self.store, lease, params)

    def record_results(self, trial_id: int, user_attrs: dict[str, Any]) -> None:
        """See ``Coordinator.record_results``."""
        record_results(self.store, trial_id, user_attrs)

    def save_checkpoint(self, lease: Lease, blob: bytes, epoch: int) -> None:
        """Writes the blob under a new id, points the ticket at it, drops the old one."""
        artifact_id = write_checkpoint(self.artifacts, lease.study_id, lease.ticket_id, blob)
        try:
            previous = record_checkpoint(self.store, lease, artifact_id, epoch)
        except BaseException:
            remove_quietly(self.artifacts, artifact_id)
            raise
        if previous is not None:
            remove_quietly(self.artifacts, previous)

    def load_checkpoint(self, lease: Lease) -> bytes | None:
        """See ``Coordinator.load_checkpoint``."""
        if lease.checkpoint is None:
            return None
        return read_checkpoint(self.artifacts, lease.checkpoint)

    def finish(self, lease: Lease, outcome: str, failure: FailureKind | None) -> None:
        """Ends the ticket and deletes its last checkpoint."""
        checkpoint = finish(self.store, lease, outcome, failure)
        if checkpoint is not None:
            remove_quietly(self.artifacts, checkpoint)

    def finish_and_settle(
        self, lease: Lease, outcome: str, failure: FailureKind | None, *, retain: bool
    ) -> bool:
        """See ``Coordinator.finish_and_settle``."""
        self.finish(lease, outcome, failure)
        if retain:
            try:
                self.retain_weights(lease.study_id)
            except Exception as exc:  # the next completed trial removes what is left
                logger.warning("study %s: weights retention failed: %s", lease.study_id, exc)
        try:
            self.end_if_done(lease.study_id)
        except Exception:  # the caller settles it the usual way (waiting out outages)
            return False
        return True

    def release(
        self, lease: Lease, failure: FailureKind, error: str, *, requeue: bool = True
    ) -> bool:
        """See ``Coordinator.release``."""
        return release(self.store, lease, failure, error, requeue=requeue)

    def end_if_done(self, study_id: int) -> StudyStatus | None:
        """See ``Coordinator.end_if_done``."""
        try:
            return end_study_if_done(self.store, study_id)
        except StudyNotFoundError:
            return None

    def end_due_studies(self) -> None:
        """See ``Coordinator.end_due_studies``."""
        end_due_studies(self.store)

    def retain_weights(self, study_id: int) -> list[int]:
        """See ``Coordinator.retain_weights``."""
        return retain_weights(self.store, study_id)

    def claim_evaluation(self, worker_id: str, study_id: int | None) -> EvaluationLease | None:
        """See ``Coordinator.claim_evaluation``."""
        return claim_evaluation(self.store, worker_id, study_id)

    def finish_evaluation(
        self,
        lease: EvaluationLease,
        state: EvaluationState,
        reports: Sequence[TrialTestReport],
        note: str | None,
    ) -> bool:
        """See ``Coordinator.finish_evaluation``."""
        return finish_evaluation(self.store, lease, state, reports, note)

    def claim_refit(self, worker_id: str, study_id: int | None) -> RefitLease | None:
        """See ``Coordinator.claim_refit``."""
        return claim_refit(self.store, worker_id, study_id)

    def beat_refit(self, lease: RefitLease) -> bool:
        """See ``Coordinator.beat_refit``."""
        return beat_refit(self.store, lease)

    def finish_refit(
        self, lease: RefitLease, state: RefitState, result: RefitResult | None, note: str | None
    ) -> bool:
        """See ``Coordinator.finish_refit``."""
        return finish_refit(self.store, lease, state, result, note)

    def spec(self, study_id: int) -> StudySpec:
        """See ``Coordinator.spec``."""
        return submitted_spec(self.store, study_id)

    def status(self, study_id: int) -> StudyStatus | None:
        """See ``Coordinator.status``."""
        try:
            return get_status(self.store, study_id)
        except StudyNotFoundError:
            return None


__all__ = ["Coordinator", "CoordinatorTooOldError", "LeaseLostError", "SqlCoordinator"]
