"""What a worker asks of the shared state, behind one small interface.

``Coordinator`` is every call a worker makes about *work* (claim a ticket, beat, record,
finish, release, settle; claim and finish a completed study's test-split evaluation and an
ended study's refit; drop the weights of trials that fell out of a study's best); the
trial itself goes through an Optuna ``BaseStorage`` and the weights through an artifact
store. ``SqlCoordinator`` runs each call on the database (it serves ``automl proxy``);
``BufferedSqlCoordinator``, a worker's default on the database, also keeps the running
trial local and sends its writes with those calls; a remote implementation
(``automl.proxy.RemoteCoordinator``) only has to provide the same methods.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automl.spec import StudySpec
from automl.spec_reading import WORKER, check_readable
from automl.store import (
    ArtifactStore,
    BufferedTrialStorage,
    EvaluationLease,
    EvaluationState,
    FailureKind,
    LeanTrialCache,
    Lease,
    LeaseLostError,
    LeaseStatus,
    Outranking,
    RefitLease,
    RefitResult,
    RefitState,
    Store,
    StudyCaches,
    StudyNotFoundError,
    StudyStatus,
    TrialTestReport,
    TrialWrites,
    apply_writes,
    attrs,
    beat_evaluation,
    beat_refit,
    claim,
    claim_evaluation,
    claim_refit,
    create_trial,
    discard,
    end_due_studies,
    end_study_if_done,
    fail_without_optuna_study,
    finish,
    finish_and_settle,
    finish_evaluation,
    finish_refit,
    get_status,
    heartbeat,
    is_transient,
    optuna_rows,
    read_checkpoint,
    record_checkpoint,
    record_params,
    record_results,
    record_trial,
    release,
    release_refit,
    retain_weights,
    submitted_spec,
    tell_trial,
    template_from_wire,
    write_checkpoint,
    write_trials,
    writes_from_json,
)
from automl.store.jobs import JOB_STALE_S, Sightings
from automl.store.reaper import MAX_STALL_SHARE

logger = logging.getLogger("automl.worker")

LOST_AT_START = "lease lost before the trial started"

Writes = dict[int, TrialWrites]
"""Buffered writes of running trials: trial id -> its writes."""


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

    def claim(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> Lease | None:
        """Takes the next unit of work (from none of the studies in ``exclude``), or None
        if there is none. A worker claims with no ticket in hand: a ticket running under
        its id is one whose claim's answer was lost, and is the one returned (so a claim
        is safe to repeat)."""
        ...

    def heartbeat(self, lease: Lease) -> LeaseStatus:
        """Beats; says whether the lease is held, the study still active, and whether
        another tool ended the attempt's trial."""
        ...

    def start_trial(self, lease: Lease, template: FrozenTrial) -> int:
        """Creates the attempt's Optuna trial from a RUNNING ``template`` and links it to
        the lease's ticket (in one transaction where the coordinator buffers the trial);
        the trial's id. Not safe to repeat (a second call creates a second trial).

        Raises:
            LeaseLostError: If the lease is no longer held (no trial was created).
            StudyNotFoundError: If the study is gone.
        """
        ...

    def record_params(self, lease: Lease, params: dict[str, Any]) -> None:
        """Keeps the attempt's params for a retry (raises ``LeaseLostError``)."""
        ...

    def record_results(self, trial_id: int, user_attrs: dict[str, Any]) -> None:
        """Sets a running trial's user attributes in one write (raises
        ``UpdateFinishedTrialError`` if it already ended). A coordinator that keeps the
        running trial locally buffers them for the trial's next call (its tell, at the
        latest), which raises that instead."""
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
        """``finish`` and ``end_if_done`` (one transaction on the database), then
        ``retain_weights`` (tried once, a failure logged) if ``retain`` or if the study
        ended: a trial's end in one call. Raises as ``finish``; returns whether the study
        was settled (if not, settle it with ``end_if_done``)."""
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

    def outranked(
        self, study_id: int, value: float, number: int, maximize: bool, keep: int
    ) -> bool:
        """Whether ``keep`` of the study's COMPLETE trials rank above a trial that completes
        with ``value`` (see ``automl.store.Outranking``)."""
        ...

    def claim_evaluation(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> EvaluationLease | None:
        """Claims a completed study's due test-split evaluation (of none of the studies in
        ``exclude``), or None if none is due.

        Raises:
            UnreadableStudyError: If the due evaluation's study is one that this worker
                (or its proxy) cannot read; nothing was claimed.
        """
        ...

    def beat_evaluation(self, lease: EvaluationLease) -> bool:
        """Renews the evaluation claim while it scores; False if it is no longer held."""
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

    def claim_refit(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> RefitLease | None:
        """Claims an ended study's queued refit (as ``claim_evaluation``)."""
        ...

    def beat_refit(self, lease: RefitLease) -> bool:
        """Renews the refit claim while it trains; False if it is no longer held."""
        ...

    def release_refit(self, lease: RefitLease) -> bool:
        """Gives the refit claim back unfinished (the worker is stopping); False if it was
        no longer held."""
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

    def fail_without_optuna_study(self, study_id: int) -> bool:
        """Fails the study if its Optuna study was deleted under it; whether it did."""
        ...


class SqlCoordinator:
    """``Coordinator`` on the store's database.

    Args:
        store: The open store.
        reader: The process that claims post-study jobs through it, as messages name it:
            a worker (which checks that its registries have every entry a study's spec
            names) or a proxy (which claims for workers whose plugins it cannot know, so
            it checks only that its automl reads the spec).
        grace_period: Seconds without a beat after which another worker's post-study job
            (test evaluation, refit) counts as abandoned and is claimed.
    """

    def __init__(
        self, store: Store, reader: str = WORKER, grace_period: float = JOB_STALE_S
    ) -> None:
        self.store = store
        self.reader = reader
        self.grace_period = grace_period
        # Stale claims of other workers seen, per kind of job (``claim_job``), shared by
        # the proxy's threads.
        self._sightings = {"evaluation": Sightings(), "refit": Sightings()}
        self.storage: BaseStorage = StudyCaches(lambda: LeanTrialCache(store), store.storage)
        """What a worker's studies are loaded with: Optuna's storage, with a cache of
        finished trials per study (without their bulky attributes)."""
        self.trials: BaseStorage = store.storage
        """Where ``create_trial`` and ``tell_trial`` go (``storage`` may buffer)."""
        self.artifacts: ArtifactStore = store.artifacts
        self._outranking = Outranking(store)

    def claim(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> Lease | None:
        """See ``Coordinator.claim``: a worker holds one ticket at a time."""
        return claim(self.store, worker_id, study_id, exclude=exclude, one_at_a_time=True)

    def heartbeat(self, lease: Lease, writes: Writes | None = None) -> LeaseStatus:
        """See ``Coordinator.heartbeat``; if the lease is held, applies the trial writes a
        worker buffered in the same transaction (a trial that ended meanwhile refuses
        them: its tell says so)."""
        if not writes:
            return heartbeat(self.store, lease)
        pending = writes
        return heartbeat(
            self.store,
            lease,
            then=lambda connection: apply_writes(connection, pending, ignore_finished=True),
        )

    def start_trial(self, lease: Lease, template: FrozenTrial) -> int:
        """See ``Coordinator.start_trial``: created through ``storage``, so that its cache
        knows the trial, and then linked (two transactions)."""
        with self.store.read() as connection:
            if not optuna_rows.optuna_study_exists(connection, lease.study_id):
                raise StudyNotFoundError(lease.study_id)  # or another tool's under its id
        trial_id = self.storage.create_new_trial(lease.study_id, template)
        try:
            record_trial(self.store, lease, trial_id, self.storage.get_trial(trial_id).number)
        except LeaseLostError:
            failed = {attrs.FAILURE: FailureKind.WORKER_LOST.value, attrs.ERROR: LOST_AT_START}
            with self.store.write() as connection:
                optuna_rows.fail_running_trial(connection, trial_id, failed)
            raise
        return trial_id

    def record_trial(self, lease: Lease, trial_id: int, number: int) -> None:
        """Links the lease's attempt to a trial created apart (what workers before
        protocol 3 call through ``automl proxy``; raises ``LeaseLostError``)."""
        record_trial(self.store, lease, trial_id, number)

    def record_params(
        self, lease: Lease, params: dict[str, Any], writes: Writes | None = None
    ) -> None:
        """See ``Coordinator.record_params``; the buffered ``writes`` (the params
        themselves) in the same transaction."""
        if not writes:
            record_params(self.store, lease, params)
            return
        pending = writes
        record_params(
            self.store, lease, params, then=lambda connection: apply_writes(connection, pending)
        )

    def record_results(
        self, trial_id: int, user_attrs: dict[str, Any], writes: Writes | None = None
    ) -> None:
        """See ``Coordinator.record_results``; with buffered ``writes``, in the same
        transaction as the results."""
        if not writes:
            record_results(self.store, trial_id, user_attrs)
            return
        merged = dict(writes)
        results = TrialWrites(user_attrs=dict(user_attrs))
        merged[trial_id] = merged.get(trial_id, TrialWrites()).then(results)
        write_trials(self.store, merged)

    def create_trial(
        self, study_id: int, template: FrozenTrial, lease: Lease | None = None
    ) -> tuple[int, int]:
        """Creates a trial (Optuna's ``create_new_trial``); its id and number. With
        ``lease``, it is also linked to the lease's ticket (see ``start_trial``).

        Raises:
            StudyNotFoundError: If the study is gone.
            LeaseLostError: If ``lease`` is no longer held.
        """
        return create_trial(self.store, self.trials, study_id, template, lease)

    def write_trials(self, writes: Writes) -> None:
        """Applies buffered trial writes, one transaction per trial (raises
        ``UpdateFinishedTrialError`` for a trial that already ended)."""
        write_trials(self.store, writes)

    def tell_trial(
        self,
        trial_id: int,
        state: TrialState,
        values: list[float] | None,
        writes: Writes | None = None,
    ) -> bool:
        """Applies the trial's last buffered writes, then ends it; whether the state
        changed (raises ``UpdateFinishedTrialError`` if it had already ended)."""
        return tell_trial(self.store, self.trials, trial_id, state, values, writes or {})

    def save_checkpoint(self, lease: Lease, blob: bytes, epoch: int) -> None:
        """Writes the blob under a new id, points the ticket at it, drops the old one."""
        artifact_id = write_checkpoint(self.artifacts, lease.study_id, lease.ticket_id, blob)
        try:
            previous = record_checkpoint(self.store, lease, artifact_id, epoch)
        except BaseException:
            discard(self.artifacts, artifact_id)
            raise
        if previous is not None:
            discard(self.artifacts, previous)

    def load_checkpoint(self, lease: Lease) -> bytes | None:
        """See ``Coordinator.load_checkpoint``."""
        if lease.checkpoint is None:
            return None
        return read_checkpoint(self.artifacts, lease.checkpoint)

    def finish(self, lease: Lease, outcome: str, failure: FailureKind | None) -> None:
        """Ends the ticket and deletes its last checkpoint."""
        checkpoint = finish(self.store, lease, outcome, failure)
        if checkpoint is not None:
            discard(self.artifacts, checkpoint)

    def finish_and_settle(
        self, lease: Lease, outcome: str, failure: FailureKind | None, *, retain: bool
    ) -> bool:
        """See ``Coordinator.finish_and_settle``: the ticket's end and the study's settling
        are one transaction."""
        try:
            checkpoint, status = finish_and_settle(self.store, lease, outcome, failure)
        except LeaseLostError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            # Settling failed for good: the ticket's end must not wait for it.
            logger.warning("study %s: settling failed: %s", lease.study_id, exc)
            self.finish(lease, outcome, failure)
            return False
        if checkpoint is not None:
            discard(self.artifacts, checkpoint)
        # With ``retain``, and a last pass when the study ends: weights a pass missed (it
        # failed, or the trial that saved them was reaped) while no later trial entered
        # the kept set.
        if retain or (status is not None and not status.is_active):
            self._retain(lease.study_id)
        return True

    def _retain(self, study_id: int) -> None:
        try:
            self.retain_weights(study_id)
        except Exception as exc:  # a later pass removes what is left
            logger.warning("study %s: weights retention failed: %s", study_id, exc)

    def release(
        self,
        lease: Lease,
        failure: FailureKind,
        error: str,
        *,
        requeue: bool = True,
        writes: Writes | None = None,
    ) -> bool:
        """See ``Coordinator.release``; the buffered ``writes`` go first (a trial that
        already ended keeps what it had)."""
        if writes:
            write_trials(self.store, writes, ignore_finished=True)
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

    def outranked(
        self, study_id: int, value: float, number: int, maximize: bool, keep: int
    ) -> bool:
        """See ``Coordinator.outranked``."""
        return self._outranking(study_id, value, number, maximize, keep)

    def _check(self, study_id: int, text: str) -> None:
        """Refuses a post-study job's study that ``reader`` cannot read."""
        check_readable(study_id, text, reader=self.reader, entries=self.reader == WORKER)

    def _claiming(self, job: str, exclude: Collection[int]) -> dict[str, Any]:
        """The options of a post-study ``job``'s claim: a claim stale for this worker's grace
        period, and seen so for half of it more, is taken over (``claim_job``)."""
        return {
            "stale_after": self.grace_period,
            "exclude": exclude,
            "check": self._check,
            "sightings": self._sightings[job],
            "confirm_after": self.grace_period * MAX_STALL_SHARE,
        }

    def claim_evaluation(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> EvaluationLease | None:
        """See ``Coordinator.claim_evaluation``."""
        return claim_evaluation(
            self.store, worker_id, study_id, **self._claiming("evaluation", exclude)
        )

    def beat_evaluation(self, lease: EvaluationLease) -> bool:
        """See ``Coordinator.beat_evaluation``."""
        return beat_evaluation(self.store, lease)

    def finish_evaluation(
        self,
        lease: EvaluationLease,
        state: EvaluationState,
        reports: Sequence[TrialTestReport],
        note: str | None,
    ) -> bool:
        """See ``Coordinator.finish_evaluation``."""
        return finish_evaluation(self.store, lease, state, reports, note)

    def claim_refit(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> RefitLease | None:
        """See ``Coordinator.claim_refit``."""
        return claim_refit(self.store, worker_id, study_id, **self._claiming("refit", exclude))

    def beat_refit(self, lease: RefitLease) -> bool:
        """See ``Coordinator.beat_refit``."""
        return beat_refit(self.store, lease)

    def release_refit(self, lease: RefitLease) -> bool:
        """See ``Coordinator.release_refit``."""
        return release_refit(self.store, lease)

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

    def fail_without_optuna_study(self, study_id: int) -> bool:
        """See ``Coordinator.fail_without_optuna_study``."""
        return fail_without_optuna_study(self.store, study_id)


class BufferedSqlCoordinator(SqlCoordinator):
    """``SqlCoordinator`` of a worker on the database: its running trial is a local copy
    whose writes ride on the coordination calls (``automl.store.trial_buffer``), as they
    do through ``automl proxy``: about half the statements per trial of Optuna's storage.

    Args:
        store: The open store.
        grace_period: As ``SqlCoordinator``'s.
    """

    def __init__(self, store: Store, grace_period: float = JOB_STALE_S) -> None:
        super().__init__(store, grace_period=grace_period)
        self.trials = self.storage  # the cached one, also behind the worker's studies
        self.buffer = BufferedTrialStorage(self.trials, self._call, untracked=store.storage)
        self.storage = self.buffer

    def _call(self, method: str, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The trial calls of ``BufferedTrialStorage``, run here."""
        trial_id = header.get("trial_id")
        with self._forgetting(None if trial_id is None else int(trial_id)):
            if method == "create_trial":
                template = template_from_wire(header["template"])
                lease = header.get("lease")
                created, number = self.create_trial(
                    int(header["study_id"]), template, None if lease is None else Lease(**lease)
                )
                return {"trial_id": created, "number": number}, b""
            if method == "write_trial":
                self.write_trials(writes_from_json(header.get("writes")))
                return {}, b""
            if method == "tell_trial":
                values = header.get("values")
                updated = self.tell_trial(
                    int(header["trial_id"]),
                    TrialState[header["state"]],
                    None if values is None else [float(v) for v in values],
                    writes_from_json(header.get("writes")),
                )
                return {"updated": updated}, b""
        raise ValueError(f"unknown trial call {method!r}")

    @contextmanager
    def _forgetting(self, trial_id: int | None) -> Iterator[None]:
        """Drops the trial's local copy if the call says the trial or its lease is gone."""
        try:
            yield
        except (LeaseLostError, UpdateFinishedTrialError):
            if trial_id is not None:
                self.buffer.forget(trial_id)
            raise

    def _lease_trial(self, lease: Lease) -> int | None:
        return self.buffer.trial_of(lease.ticket_id, lease.attempt)

    def heartbeat(self, lease: Lease, writes: Writes | None = None) -> LeaseStatus:
        """See ``Coordinator.heartbeat``; carries the running trial's buffered writes."""
        trial_id = self._lease_trial(lease)
        with self.buffer.pending_writes(trial_id) as pending:
            status = super().heartbeat(lease, writes_from_json(pending))
        if (not status.held or status.trial_ended) and trial_id is not None:
            self.buffer.forget(trial_id)  # reads of an ended trial go to the database
        return status

    def start_trial(self, lease: Lease, template: FrozenTrial) -> int:
        """See ``Coordinator.start_trial`` (one transaction); the trial's writes ride on
        the lease's calls from then on."""
        return self.buffer.start_trial(lease.study_id, template, lease)

    def record_params(
        self, lease: Lease, params: dict[str, Any], writes: Writes | None = None
    ) -> None:
        """See ``Coordinator.record_params``; carries the suggested params."""
        trial_id = self._lease_trial(lease)
        if trial_id is not None:
            self.buffer.raise_refusal(trial_id)
        with self.buffer.pending_writes(trial_id) as pending:
            super().record_params(lease, params, writes_from_json(pending))

    def record_results(
        self, trial_id: int, user_attrs: dict[str, Any], writes: Writes | None = None
    ) -> None:
        """See ``Coordinator.record_results``; for the running trial, buffered: the results
        travel with its next call (the tell, at the latest), in that call's transaction."""
        if not self.buffer.stage_user_attrs(trial_id, user_attrs):
            super().record_results(trial_id, user_attrs, writes)  # not kept here: at once

    def save_checkpoint(self, lease: Lease, blob: bytes, epoch: int) -> None:
        """See ``Coordinator.save_checkpoint``."""
        with self._forgetting(self._lease_trial(lease)):
            super().save_checkpoint(lease, blob, epoch)

    def load_checkpoint(self, lease: Lease) -> bytes | None:
        """See ``Coordinator.load_checkpoint``."""
        with self._forgetting(self._lease_trial(lease)):
            return super().load_checkpoint(lease)

    def finish(self, lease: Lease, outcome: str, failure: FailureKind | None) -> None:
        """See ``Coordinator.finish``."""
        with self._forgetting(self._lease_trial(lease)):
            super().finish(lease, outcome, failure)

    def finish_and_settle(
        self, lease: Lease, outcome: str, failure: FailureKind | None, *, retain: bool
    ) -> bool:
        """See ``Coordinator.finish_and_settle``."""
        with self._forgetting(self._lease_trial(lease)):
            return super().finish_and_settle(lease, outcome, failure, retain=retain)

    def release(
        self,
        lease: Lease,
        failure: FailureKind,
        error: str,
        *,
        requeue: bool = True,
        writes: Writes | None = None,
    ) -> bool:
        """See ``Coordinator.release``; carries the buffered writes, then drops the copy."""
        trial_id = self._lease_trial(lease)
        with self.buffer.pending_writes(trial_id) as pending:
            released = super().release(
                lease, failure, error, requeue=requeue, writes=writes_from_json(pending)
            )
        if trial_id is not None:
            self.buffer.forget(trial_id)  # the attempt's trial ended
        return released


__all__ = [
    "BufferedSqlCoordinator",
    "Coordinator",
    "CoordinatorTooOldError",
    "LeaseLostError",
    "SqlCoordinator",
]
