"""Run one claimed ticket: create its Optuna trial, suggest, train, report, end it.

Whatever happens after the claim, the ticket never stays running: the trial ends
COMPLETE, PRUNED or FAIL (with its failure kind), or the ticket goes back to the queue
(the worker is stopping, the database failed before training started, the study ended),
or the reaper already took it (then any late result is rejected, never counted twice).
Database calls that are safe to repeat wait out an outage instead of failing the trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from automl.config import unusable_folder
from automl.data import DatasetError, ImageData, load_dataset
from automl.delivery.card import build_card, library_versions, model_input
from automl.models.transfer import CheckpointError
from automl.registry import validation_messages
from automl.space import suggest
from automl.spec import StudySpec
from automl.store import (
    Backoff,
    FailureKind,
    Lease,
    LeaseLostError,
    attrs,
    automl_study_name,
    is_disk_full,
    is_transient,
    outranked_reason,
    remove_quietly,
    retry_transient,
    running_trial_template,
    save_model_card,
    save_weights,
)
from automl.store.artifacts import ArtifactsFolderWriteError, FolderArtifactStore
from automl.store.best_reads import OPTUNA_STUDY_GONE
from automl.store.faults import first_line
from automl.store.shared_artifacts import shared_use_attr
from automl.train import TrainingInterrupted, TrainResult, train
from automl.train.accel import is_out_of_memory, release_device_memory
from automl.train.checkpoint import TrainState
from automl.train.loop import TrainingDiverged
from automl.train.trial_config import TrialConfig
from automl.worker.coordinator import Coordinator, CoordinatorTooOldError
from automl.worker.data_identity import DataChangedError, DataIdentity, require_study_data
from automl.worker.device_faults import stop_after, stops_the_worker
from automl.worker.identity import training_seed
from automl.worker.keeper import LeaseKeeper
from automl.worker.shared_cache import SharedArtifactCache
from automl.worker.slots import DeviceGate, GateAbandoned

logger = logging.getLogger("automl.worker")
trial_log = logging.getLogger("automl.worker.trials")
"""One line per ended attempt (``_log``): ``automl run`` shows its own progress instead."""

MAX_ERROR_CHARS = 4000
OPTIONAL_WRITE_TRIES = 5
"""Tries of a write training can go on without (a checkpoint) on a full disk: about 3 s."""
LEAVING_TRIES = 3
"""Tries (about a second) of a call a stopping worker leaves to the reaper, in a database
outage: a blip is ridden out, an outage is not waited for."""
OPTIONAL_RECORD_TRIES = 3
"""Tries over database errors at a record a trial can do without (its model card, its
study's use of a shared artifact)."""
T = TypeVar("T")


class ResultRejectedError(RuntimeError):
    """The trial was ended by someone else (the reaper) before this worker's result."""


@dataclass
class TrialContext:
    """What running a ticket needs from its worker.

    Attributes:
        coordinator: The shared state.
        worker_id: This worker's unique id.
        device: Torch device for training.
        stopping: True once the worker was asked to stop.
        checkpoint_interval: Seconds between checkpoints within a long epoch.
        checkpoint_spacing: Least seconds between two checkpoints at epoch ends.
        gate: Shares the device with the other slots on it (or runs a trial alone).
    """

    coordinator: Coordinator
    worker_id: str
    device: str
    stopping: Callable[[], bool]
    checkpoint_interval: float
    gate: DeviceGate = field(default_factory=lambda: DeviceGate(None))
    checkpoint_spacing: float = 0.0

    def persist(
        self,
        call: Callable[[], T],
        doing: str,
        *,
        optional: bool = False,
        leave_when_stopping: bool = False,
    ) -> T:
        """Runs a call that is safe to repeat, waiting out storage outages.

        The worker's stop does not end a wait for the database (a result in hand is never
        dropped), but it ends a wait for disk space, which only a person can free: the
        call then raises, and the trial goes back to the queue. It ends any wait of a call
        the reaper makes good for a worker that left (a checkpoint, an epoch's report,
        loading the claimed ticket's study, giving a trial back): a worker asked to stop
        during an outage stops.

        Args:
            call: The operation.
            doing: What it does, for the log.
            optional: Whether training can go on without it (a checkpoint): on a full disk
                it is given up after ``OPTIONAL_WRITE_TRIES`` tries, and once the worker
                is stopping as with ``leave_when_stopping``.
            leave_when_stopping: Once the worker is stopping, give it up after
                ``LEAVING_TRIES`` tries (the call raises its last error).
        """
        tries, last = 0, None

        def attempt() -> T:
            nonlocal tries, last
            try:
                return call()
            except Exception as exc:
                tries, last = tries + 1, exc
                raise

        def give_up() -> bool:
            if last is None:
                return False
            if (optional or leave_when_stopping) and self.stopping():
                return tries >= LEAVING_TRIES or is_disk_full(last)
            if not is_disk_full(last):
                return False  # a database outage: wait
            return self.stopping() or (optional and tries >= OPTIONAL_WRITE_TRIES)

        return retry_transient(
            attempt,
            # Its own: a shared one is reset by every successful heartbeat meanwhile.
            backoff=Backoff(logger),
            doing=doing,
            give_up=give_up,
        )


class ArtifactsFolderError(RuntimeError):
    """The worker's artifacts folder cannot be written (read-only, gone, a file by its
    name): the worker stops, as at start (``automl.worker.loop.check_folders``).

    Args:
        artifacts: The folder store.
        exc: What writing in it raised.
    """

    def __init__(self, artifacts: FolderArtifactStore, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(
            unusable_folder("artifacts folder", artifacts.directory, "AUTOML_ARTIFACTS_DIR", reason)
            + " (the trial went back to the queue; restart the worker once it can)"
        )


ENDED_OUTSIDE = "ended_outside"
"""How an attempt ends whose trial another tool ended while it trained: its ticket ends
as the trial was told (a trial of the budget finished)."""
FAILURE_KINDS = frozenset(kind.value for kind in FailureKind)


@dataclass
class TrialRun:
    """How running one ticket ended.

    Attributes:
        lease: The ticket's lease.
        result: ``complete``, ``pruned``, ``fail``, ``ended_outside`` (another tool ended
            its trial: the ticket ended as told), ``released`` (back to the queue),
            ``left`` (to the reaper: a worker stopping during a storage outage), ``lost``
            (the reaper took the ticket) or ``rejected`` (a late result).
        trial: The attempt's Optuna trial as it ended, if one was created.
        settled: Whether the study was already settled after the ticket ended.
        outage: Given back for a storage outage (a full disk, a database away), which
            would give the next claim back too.
    """

    lease: Lease
    result: str
    trial: FrozenTrial | None = None
    settled: bool = False
    outage: bool = False


def give_back(
    ctx: TrialContext,
    lease: Lease,
    kind: FailureKind,
    reason: str,
    *,
    number: int | None = None,
) -> TrialRun | None:
    """Gives the ticket back to the queue (``released``; ``lost`` where the reaper took it
    first). A worker stopping during a storage outage leaves it to the reaper instead
    (``left``), after ``LEAVING_TRIES`` tries (a full disk: at once): the reaper queues it
    again once its heartbeats are overdue, as a lost worker's (one of its retries).

    Args:
        ctx: The worker's context.
        lease: The ticket's lease.
        kind: Why it goes back (``interrupted``, ``out_of_memory``...).
        reason: The error recorded on its trial.
        number: Its trial's number, for the log (None: no trial yet).

    Returns:
        How the ticket ended; None if the reaper took it first (the caller says so).
    """
    try:
        released = ctx.persist(
            lambda: ctx.coordinator.release(lease, kind, reason),
            "releasing a trial",
            leave_when_stopping=True,
        )
    except Exception as exc:
        if not (ctx.stopping() and is_transient(exc)):
            raise
        logger.warning(
            "storage unavailable while stopping: ticket %s (trial %s) is left to the reaper, "
            "which queues it again once its heartbeats are overdue (as a lost worker's: one "
            "of its retries)",
            lease.ticket_id,
            "-" if number is None else number,
        )
        return TrialRun(lease, "left", outage=True)
    return TrialRun(lease, "released") if released else None


def fail_if_optuna_study_gone(ctx: TrialContext, study_id: int) -> str | None:
    """Fails ``study_id`` if its Optuna study was deleted under it with another tool (the
    ``LookupError`` a worker sees loading it or creating a trial), saying so at ERROR.

    Returns:
        Why the study failed, or None if its Optuna study is there (the error was another)
        or the proxy is too old to ask.
    """
    try:
        failed = ctx.persist(
            lambda: ctx.coordinator.fail_without_optuna_study(study_id),
            "failing a study without its Optuna study",
        )
    except CoordinatorTooOldError:
        return None
    if not failed:
        return None
    reason = OPTUNA_STUDY_GONE.format(study_id=study_id)
    logger.error("study %s failed: %s", study_id, reason)
    return reason


def run_lease(
    ctx: TrialContext, lease: Lease, study: optuna.Study, spec: StudySpec, keeper: LeaseKeeper
) -> TrialRun:
    """Runs the ticket of ``lease`` to its end (see the module docstring).

    Args:
        ctx: The worker's context.
        lease: A freshly claimed lease.
        study: The Optuna study, with the sampler and pruner this attempt uses.
        spec: The study's spec.
        keeper: The lease's running heartbeat.
    """
    started = time.perf_counter()
    try:
        with ctx.gate.hold(lease.exclusive, lambda: ctx.stopping() or keeper.should_stop):
            run = _Attempt(ctx, lease, study, spec, keeper).run()
    except GateAbandoned as exc:
        keeper.ending()  # its beats would take the release for a lost lease
        ended = give_back(ctx, lease, FailureKind.INTERRUPTED, str(exc))
        return ended or TrialRun(lease, "lost")

    _log(run, spec, time.perf_counter() - started)
    return run


class _Attempt:
    """One attempt at one ticket (a helper of ``run_lease``)."""

    def __init__(
        self,
        ctx: TrialContext,
        lease: Lease,
        study: optuna.Study,
        spec: StudySpec,
        keeper: LeaseKeeper,
    ) -> None:
        self.ctx, self.lease, self.study, self.spec = ctx, lease, study, spec
        self.coordinator = ctx.coordinator
        self.keeper = keeper
        self.trial_id: int | None = None
        self.trial: optuna.Trial | None = None
        self.settled = False
        self.uploaded: list[str] = []  # artifacts only the trial's buffered writes name
        self.disk_full = False
        """The last checkpoint was given up on a full disk: the next ones try once, quietly."""
        self.data_identity: DataIdentity | None = None
        """The identity of the data the trial trains on, once loaded."""

    # --- the attempt -------------------------------------------------------------------------

    def run(self) -> TrialRun:
        resume = self._load_checkpoint()
        try:
            self._create_trial(resume)
        except LeaseLostError as exc:  # no trial runs (``start_trial`` saw to that)
            return self._lost(exc)
        except CoordinatorTooOldError as exc:
            # Not the ticket's fault: hand it back untouched and stop this worker.
            logger.error("%s", exc)
            self._give_back(FailureKind.INTERRUPTED, str(exc), requeue=True)
            raise
        except Exception as exc:
            # Before training: a database fault gives the ticket back untouched; any
            # other error (a sampler failing in before_trial) ends it failed.
            if isinstance(exc, LookupError):  # a study this worker had loaded before
                gone = fail_if_optuna_study_gone(self.ctx, self.lease.study_id)
                if gone is not None:
                    return self._give_back(FailureKind.ERROR, gone, requeue=False)
            requeue = is_transient(exc)
            logger.warning("could not start ticket %s: %s", self.lease.ticket_id, _describe(exc))
            return self._give_back(
                FailureKind.INTERRUPTED if requeue else FailureKind.ERROR,
                _describe(exc),
                requeue=requeue,
            )
        return self._train_and_report(resume)

    def _load_checkpoint(self) -> TrainState | None:
        if self.lease.checkpoint is None:
            return None
        blob = self.ctx.persist(
            lambda: self.coordinator.load_checkpoint(self.lease),
            "reading a checkpoint",
            leave_when_stopping=True,
        )
        if blob is None:
            logger.warning("checkpoint of ticket %s is gone: starting over", self.lease.ticket_id)
            return None
        try:
            return TrainState.from_bytes(blob)
        except Exception as exc:
            logger.warning("unreadable checkpoint of ticket %s: %s", self.lease.ticket_id, exc)
            return None

    def _create_trial(self, resume: TrainState | None) -> None:
        lease = self.lease
        user_attrs: dict[str, Any] = {
            attrs.LEASE: lease.key,
            attrs.TICKET: lease.ticket_id,
            attrs.ATTEMPT: lease.attempt,
            attrs.WORKER: lease.worker_id,
        }
        curve: dict[int, float] = {}
        if resume is not None:
            user_attrs[attrs.RESUMED_FROM_EPOCH] = resume.epoch
            if len(self.spec.metrics) == 1:
                metric = self.spec.metrics[0]
                curve = {int(h["epoch"]): h[metric] for h in resume.history if metric in h}
        fixed = {"fixed_params": lease.params} if lease.params else {}
        template = running_trial_template(user_attrs, fixed, curve)
        # Not repeated on failure: a second call could create a second trial. The
        # release that follows a failure finds a trial it created by its lease attribute.
        self.trial_id = self.coordinator.start_trial(lease, template)
        self.trial = optuna.Trial(self.study, self.trial_id)

    def _train_and_report(self, resume: TrainState | None) -> TrialRun:
        assert self.trial is not None
        trial, keeper = self.trial, self.keeper
        try:
            # A resumed attempt keeps its checkpoint's seed, whichever version wrote it.
            seed = (
                resume.seed
                if resume is not None
                else training_seed(self.lease.seed, self.lease.ticket_id)
            )
            try:
                config = suggest(trial, self.spec, seed)
            except Exception:
                self._record_params()  # rerun-failed repeats them once the cause is fixed
                raise
            self._record_params()
            self._set_attr(attrs.CONFIG, config.model_dump(mode="json"))
            shared = SharedArtifactCache(self.coordinator.artifacts, on_use=self._record_use)
            result = train(
                config,
                self._reporter(config.epochs),
                device=self.ctx.device,
                should_stop=lambda: self.ctx.stopping() or keeper.should_stop,
                checkpoint=self._save_checkpoint,
                checkpoint_interval=self.ctx.checkpoint_interval,
                checkpoint_spacing=self.ctx.checkpoint_spacing,
                resume=resume,
                monitor=self.spec.metrics[0],
                direction=self.spec.directions[0],  # type: ignore[arg-type]
                required=self.spec.metrics[1:],
                artifacts=shared,
                on_data=self._check_data,
            )
            return self._report_result(result, config)
        except (ResultRejectedError, UpdateFinishedTrialError) as exc:
            return self._rejected(exc)
        except LeaseLostError as exc:
            return self._lost(exc)
        except TrainingInterrupted as exc:
            if keeper.lost.is_set():
                return self._lost(exc)
            if keeper.trial_ended.is_set():  # another tool ended it: its ticket ends so
                return self._rejected(exc)
            if keeper.study_ended.is_set():
                return self._give_back(FailureKind.CANCELLED, "study ended while it ran")
            return self._give_back(FailureKind.INTERRUPTED, f"worker stopping: {exc}")
        except TrainingDiverged as exc:
            return self._diverged(exc)
        except CoordinatorTooOldError as exc:
            logger.error("%s", exc)
            self._give_back(FailureKind.INTERRUPTED, str(exc), requeue=True)
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                return self._out_of_memory(exc)
            if stops_the_worker(exc):
                return self._device_fault(exc)
            folder_fault = self._artifacts_folder_fault(exc)
            artifacts = self.coordinator.artifacts
            if folder_fault is not None and isinstance(artifacts, FolderArtifactStore):
                self._give_back(FailureKind.INTERRUPTED, _describe(exc))
                raise ArtifactsFolderError(artifacts, folder_fault) from exc
            if is_transient(exc):
                return self._give_back(FailureKind.INTERRUPTED, _describe(exc), outage=True)
            logger.debug("trial %s failed", trial.number, exc_info=True)
            return self._fail(FailureKind.ERROR, _describe(exc))

    def _artifacts_folder_fault(self, exc: BaseException) -> ArtifactsFolderWriteError | None:
        """The error in ``exc`` that says the worker's artifacts folder cannot be written
        (made read-only, deleted, replaced by a file), if any: every trial would fail
        alike, so this one goes back to the queue and the worker stops, not the study."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, ArtifactsFolderWriteError):
                return current
            current = current.__cause__ or current.__context__
        return None

    def _check_data(self, data: ImageData) -> None:
        """Ends the trial unless ``data`` is the study's data (``require_study_data``),
        then records what it is."""
        self.data_identity = DataIdentity.of(data)
        self._require_study_data()
        self._set_attr(attrs.DATA, self.data_identity.record())

    def _require_study_data(self) -> None:
        identity, trial = self.data_identity, self.trial
        if identity is None or trial is None:
            return
        study_id = self.lease.study_id
        trials = self.ctx.persist(
            lambda: self.coordinator.storage.get_all_trials(study_id, deepcopy=False),
            "reading the study's trials",
        )
        require_study_data(trial.number, trials, identity, self.spec.dataset.source)

    def _record_params(self) -> None:
        assert self.trial is not None
        params = dict(self.trial.params)
        self.ctx.persist(
            lambda: self.coordinator.record_params(self.lease, params), "recording params"
        )

    def _reporter(self, epochs: int) -> Callable[[int, dict[str, float]], bool]:
        assert self.trial is not None
        trial, keeper, spec = self.trial, self.keeper, self.spec
        single = len(spec.metrics) == 1

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            value = metrics[spec.metrics[0]] if single else math.nan
            refused: UpdateFinishedTrialError | None = None
            if math.isfinite(value):
                # Before the beat (after the last epoch: the tell), which carries it.
                try:
                    self.ctx.persist(
                        lambda: trial.report(value, epoch),
                        "reporting an epoch",
                        leave_when_stopping=True,
                    )
                except UpdateFinishedTrialError as exc:
                    refused = exc  # reaped: the beat below tells whether the lease is gone
            if epoch < epochs:
                # An epoch end notices a cancel or a lost lease at once. After the last
                # one the tell follows: the report travels with it, one write fewer.
                keeper.beat()
            if keeper.should_stop:
                raise TrainingInterrupted(f"stopped after epoch {epoch}")
            if refused is not None:
                raise refused
            if not single:
                return False
            if not math.isfinite(value):
                raise FloatingPointError(f"{spec.metrics[0]} is not finite at epoch {epoch}")
            if epoch >= epochs:
                return False  # trained to the end: pruning now would save nothing, only discard
            return self.ctx.persist(
                trial.should_prune, "asking the pruner", leave_when_stopping=True
            )

        return report

    def _save_checkpoint(self, state: TrainState) -> None:
        if self.keeper.lost.is_set():
            return
        blob = state.to_bytes()

        def save() -> None:
            self.coordinator.save_checkpoint(self.lease, blob, state.epoch)

        try:
            if self.disk_full:
                save()  # one try: waiting and logging each epoch again says nothing new
                logger.info("checkpoints of ticket %s are saved again", self.lease.ticket_id)
            else:
                self.ctx.persist(save, "saving a checkpoint", optional=True)
            self.disk_full = False
        except LeaseLostError:
            self.keeper.lost.set()
        except Exception as exc:  # a checkpoint is an optimization: keep training
            if self._artifacts_folder_fault(exc) is not None and isinstance(
                self.coordinator.artifacts, FolderArtifactStore
            ):
                raise  # the weights could not be saved either: the worker stops now
            if self.disk_full and is_disk_full(exc):
                return
            self.disk_full = is_disk_full(exc)
            later = "; the next ones are tried once until there is room" if self.disk_full else ""
            logger.warning("checkpoint of ticket %s failed: %s%s", self.lease.ticket_id, exc, later)

    # --- endings -----------------------------------------------------------------------------

    def _report_result(self, result: TrainResult, config: TrialConfig) -> TrialRun:
        results: dict[str, Any] = {
            attrs.METRICS: result.metrics,
            attrs.HISTORY: result.history,
            attrs.PER_CLASS: result.per_class,
            attrs.MOST_CONFUSED: result.most_confused,
            attrs.CLASSES: list(result.classes),
            attrs.BEST_EPOCH: result.best_epoch,
        }
        if result.confusion is not None:
            results[attrs.CONFUSION] = result.confusion
        if result.notes:
            results[attrs.NOTES] = result.notes
        # Again: a lower-numbered trial on other data may have recorded it since the start.
        self._require_study_data()
        values: list[float] = []
        keep_weights = True
        if not result.pruned:
            values = [result.metrics[metric] for metric in self.spec.metrics]
            results.update(self._model_input(config, result.dataset))
            keep = self.spec.keep_weights
            if keep != "all" and self._outranked(values, keep):
                keep_weights = False  # retention would delete them at once
                results[attrs.WEIGHTS_REMOVED] = outranked_reason(keep)
        self._record_results(results)
        if result.pruned:
            frozen = self._tell(state=TrialState.PRUNED)
            self._finish("pruned", None)
            return TrialRun(self.lease, "pruned", frozen, self.settled)
        if not all(math.isfinite(value) for value in values):
            raise FloatingPointError(f"objective is not finite: {values}")
        assert self.trial is not None
        trial = self.trial
        if keep_weights:
            weights = self.ctx.persist(
                lambda: save_weights(
                    self.coordinator.storage, trial, result.state_dict, self.coordinator.artifacts
                ),
                "saving weights",
            )
            self.uploaded.append(weights)
        self._save_model_card(values)
        frozen = self._tell(values=values)
        # Only a trial that entered the kept set can push another out of it.
        self._finish("complete", None, retain=keep_weights)
        return TrialRun(self.lease, "complete", frozen, self.settled)

    def _outranked(self, values: list[float], keep: int) -> bool:
        """Whether ``keep`` of the study's COMPLETE trials already rank above this one
        (single objective; see ``automl.store.retention``). False whenever unsure: the
        weights are then saved, and retention decides."""
        if len(values) != 1 or not math.isfinite(values[0]) or self.trial is None:
            return False
        maximize = self.spec.directions[0] == "maximize"
        try:
            return self.coordinator.outranked(
                self.lease.study_id, values[0], self.trial.number, maximize, keep
            )
        except Exception as exc:
            logger.debug("could not rank trial %s: %s", self.trial.number, exc)
            return False

    def _model_input(self, config: TrialConfig, data: ImageData | None) -> dict[str, Any]:
        """What the weights take (shape, preprocessing, normalization, dataset fingerprint)
        and the library versions, as attributes: what the model card needs besides the
        others. The dataset is the one training used, still in memory."""
        try:
            if data is None:
                data = load_dataset(config.dataset.source, config.dataset.options)
            facts = model_input(config, data)
        except Exception as exc:  # a card loads the dataset itself then
            logger.warning(
                "study %s: the model input of ticket %s is not recorded: %s",
                self.lease.study_id,
                self.lease.ticket_id,
                exc,
            )
            return {}
        return {attrs.INPUT: facts, attrs.LIBRARIES: library_versions(config)}

    def _optional_record(self, call: Callable[[], T], doing: str) -> T:
        """``call``, tried ``OPTIONAL_RECORD_TRIES`` times over database errors (a record
        the trial can do without: the caller says what is lost if it still fails)."""
        return retry_transient(
            call,
            backoff=Backoff(logger),
            doing=doing,
            give_up=self.ctx.stopping,
            attempts=OPTIONAL_RECORD_TRIES,
        )

    def _record_use(self, key: str) -> bool:
        """Records that the study uses the shared artifact ``key`` (a GAN generator), which
        keeps it until the last such study is deleted; whether it did. Tried
        ``OPTIONAL_RECORD_TRIES`` times: without the record the trial still trains, with
        its machine's copy only."""
        try:
            self._optional_record(
                lambda: self.coordinator.storage.set_study_system_attr(
                    self.lease.study_id, shared_use_attr(key), True
                ),
                f"recording the use of {key}",
            )
        except Exception as exc:
            logger.warning(
                "study %s: its use of %s is not recorded (kept on this machine only): %s",
                self.lease.study_id,
                key,
                exc,
            )
            return False
        return True

    def _save_model_card(self, values: list[float]) -> None:
        """Stores the trial's model card as an Optuna artifact, for optuna-dashboard. Tried
        ``OPTIONAL_RECORD_TRIES`` times over a database error (a tester's cut connections left
        trials without one), then given up: the card is a convenience (bundles build their
        own), never worth the result."""
        assert self.trial is not None
        trial = self.trial
        try:
            frozen = self._frozen()
            if frozen is None:
                return
            frozen.values = values  # the card's objectives; the trial is told next
            card = build_card(
                frozen,
                study_id=self.lease.study_id,
                study_name=automl_study_name(self.study.study_name),
                metrics=self.spec.metrics,
                directions=self.spec.directions,
            )
            saved = self._optional_record(
                lambda: save_model_card(trial, card, self.coordinator.artifacts),
                f"storing the model card of trial {trial.number}",
            )
            self.uploaded.append(saved)
        except Exception as exc:
            logger.warning(
                "study %s: the model card of trial %s is not stored: %s",
                self.lease.study_id,
                trial.number,
                exc,
            )

    def _fail(self, kind: FailureKind, error: str) -> TrialRun:
        try:
            self._record_results({attrs.ERROR: error[:MAX_ERROR_CHARS], attrs.FAILURE: kind.value})
            frozen = self._tell(state=TrialState.FAIL, failure=kind)
            self._finish("fail", kind)
        except (ResultRejectedError, UpdateFinishedTrialError) as exc:
            return self._rejected(exc)
        except LeaseLostError as exc:
            return self._lost(exc)
        return TrialRun(self.lease, "fail", frozen, self.settled)

    def _diverged(self, exc: TrainingDiverged) -> TrialRun:
        """Ends a diverged run as pruned: its configuration is a poor one (the sampler
        learns from the epochs it reported), not a failure toward ``max_failed``."""
        try:
            self._record_results({attrs.ERROR: _describe(exc)[:MAX_ERROR_CHARS]})
            frozen = self._tell(state=TrialState.PRUNED)
            self._finish("pruned", None)
        except (ResultRejectedError, UpdateFinishedTrialError) as err:
            return self._rejected(err)
        except LeaseLostError as err:
            return self._lost(err)
        return TrialRun(self.lease, "pruned", frozen, self.settled)

    def _out_of_memory(self, exc: BaseException) -> TrialRun:
        """Frees what the trial held; the first time, queues it again to run alone."""
        error = _describe(exc)
        _drop_tracebacks(exc)  # their frames hold the trial's tensors
        release_device_memory()
        if self.lease.exclusive:
            return self._fail(FailureKind.OUT_OF_MEMORY, error)
        logger.warning(
            "ticket %s ran out of memory: queued again to run alone", self.lease.ticket_id
        )
        return self._give_back(FailureKind.OUT_OF_MEMORY, error)

    def _device_fault(self, exc: BaseException) -> NoReturn:
        """Fails the trial, then stops the worker: after such an error every CUDA call
        of this process may fail, and each later trial would fail for nothing.

        Raises:
            DeviceFaultError: Always, once the trial's failure is recorded.
        """
        self._fail(FailureKind.ERROR, _describe(exc))
        number = "?" if self.trial is None else self.trial.number
        raise stop_after(exc, self.ctx.worker_id, f"trial {number} of study {self.lease.study_id}")

    def _give_back(
        self, kind: FailureKind, error: str, *, requeue: bool = True, outage: bool = False
    ) -> TrialRun:
        self.keeper.ending()
        if requeue:
            number = None if self.trial is None else self.trial.number
            ended = give_back(self.ctx, self.lease, kind, error, number=number)
            if ended is not None and ended.result == "left":
                return ended
            released = ended is not None
        else:  # a failure to record is a result: it waits out an outage
            released = self.ctx.persist(
                lambda: self.coordinator.release(self.lease, kind, error, requeue=False),
                "releasing a trial",
            )
        if not released:
            return self._lost(LeaseLostError("lease lost before release"))
        result = "released" if requeue else "fail"
        return TrialRun(self.lease, result, self._frozen(), outage=outage)

    def _lost(self, exc: BaseException) -> TrialRun:
        """The reaper took the ticket while it ran (the work continues elsewhere), or the
        study was deleted."""
        self._drop_uploads()
        frozen = self._frozen()
        if self._study_deleted(frozen):
            logger.info("study %s was deleted while ticket %s ran", *self._ids())
        else:
            logger.warning(
                "ticket %s of study %s was reaped while it ran; dropping it (%s)",
                self.lease.ticket_id,
                self.lease.study_id,
                exc,
            )
        return TrialRun(self.lease, "lost", frozen)

    def _rejected(self, exc: BaseException) -> TrialRun:
        """The result came after another ended the trial: the reaper (it is not counted),
        another tool (plain optuna-dashboard's "tell": the ticket ends as that tool told
        it, without this attempt's weights or results, so the trial never ranks), or a
        deletion of the study."""
        self._drop_uploads()
        frozen = self._frozen()
        if frozen is not None and frozen.state.is_finished() and not self.keeper.lost.is_set():
            return self._settled_as_told(exc, frozen)
        return self._rejection(exc, frozen)

    def _rejection(self, exc: BaseException, frozen: FrozenTrial | None) -> TrialRun:
        if self._study_deleted(frozen):
            logger.info("study %s was deleted while ticket %s ran", *self._ids())
        else:
            logger.warning(
                "result rejected: trial %s of study %s had been ended by another (the "
                "reaper, or a client outside automl): %s",
                frozen.number if frozen is not None else "?",
                self.lease.study_id,
                exc,
            )
        return TrialRun(self.lease, "rejected", frozen)

    def _settled_as_told(self, exc: BaseException, frozen: FrozenTrial) -> TrialRun:
        """Ends the ticket as its trial was told while the lease is still held (only
        another tool ends a trial under a held lease), as the reaper would settle it a
        grace period later; a lease lost meanwhile makes it a plain rejection."""
        outcome = frozen.state.name.lower()
        failure = None
        if frozen.state == TrialState.FAIL:
            told = frozen.user_attrs.get(attrs.FAILURE)
            failure = FailureKind(told) if told in FAILURE_KINDS else FailureKind.ERROR
        try:
            self._finish(outcome, failure)
        except LeaseLostError:
            return self._rejection(exc, frozen)
        logger.warning(
            "trial %s of study %s was ended %s by another tool while it ran: its ticket "
            "ends so, and the trial is never ranked",
            frozen.number,
            self.lease.study_id,
            frozen.state.name,
        )
        return TrialRun(self.lease, ENDED_OUTSIDE, frozen, self.settled)

    def _study_deleted(self, frozen: FrozenTrial | None) -> bool:
        """Whether the study was deleted (or is being deleted): the attempt's trial is
        gone (only a deletion removes trials), or the study reads as gone."""
        if self.trial_id is not None and frozen is None:
            return True
        try:  # tried once: only the wording of a log line depends on it
            return self.coordinator.status(self.lease.study_id) is None
        except Exception:
            return False

    def _ids(self) -> tuple[int, int]:
        return self.lease.study_id, self.lease.ticket_id

    def _drop_uploads(self) -> None:
        """Removes the weights and card this attempt uploaded for a trial that someone
        else ended: the writes naming them were refused, so nothing else ever would."""
        for artifact_id in self.uploaded:
            try:
                remove_quietly(self.coordinator.artifacts, artifact_id)
            except Exception as exc:  # an outage: the file stays, the trial goes on
                logger.warning("could not remove artifact %s: %s", artifact_id, exc)
        self.uploaded.clear()

    # --- storage calls -----------------------------------------------------------------------

    def _set_attr(self, key: str, value: Any) -> None:
        assert self.trial is not None
        trial = self.trial
        self.ctx.persist(lambda: trial.set_user_attr(key, value), "recording results")

    def _record_results(self, user_attrs: dict[str, Any]) -> None:
        trial_id = self.trial_id
        assert trial_id is not None
        self.ctx.persist(
            lambda: self.coordinator.record_results(trial_id, user_attrs), "recording results"
        )

    def _tell(
        self,
        *,
        values: list[float] | None = None,
        state: TrialState | None = None,
        failure: FailureKind | None = None,
    ) -> FrozenTrial:
        """``study.tell``, repeated through outages; a trial someone else ended is a
        rejection, unless it ended exactly as told (an earlier try went through)."""
        assert self.trial is not None and self.trial_id is not None
        trial, trial_id = self.trial, self.trial_id
        target = state or TrialState.COMPLETE
        self.keeper.ending()  # a beat after the tell finds the trial ended by this worker

        def tell() -> FrozenTrial:
            try:
                return self.study.tell(trial, values, state=state)
            except (UpdateFinishedTrialError, ValueError):
                try:
                    frozen = self.coordinator.storage.get_trial(trial_id)
                except KeyError:  # its study was deleted
                    raise ResultRejectedError("the trial no longer exists") from None
                if not frozen.state.is_finished():
                    raise
                mine = (
                    frozen.state == target
                    and (failure is None or frozen.user_attrs.get(attrs.FAILURE) == failure.value)
                    and (values is None or frozen.values == list(values))  # not a made-up one
                )
                if not mine:
                    message = f"trial {frozen.number} ended {frozen.state.name}"
                    raise ResultRejectedError(message) from None
            return self.coordinator.storage.get_trial(trial_id)

        told = self.ctx.persist(tell, "telling a result")
        self.uploaded.clear()  # the trial names them now
        return told

    def _finish(self, outcome: str, failure: FailureKind | None, *, retain: bool = False) -> None:
        """Ends the ticket, then settles the study and (``retain``: a trial that entered the
        kept set) drops the weights of the trials that fell out of its ``keep_weights``
        best, tried once: whatever a failure leaves, the next such trial, or the pass when
        the study ends, removes."""
        self.keeper.ending()
        self.settled = self.ctx.persist(
            lambda: self.coordinator.finish_and_settle(self.lease, outcome, failure, retain=retain),
            "ending a ticket",
        )

    def _frozen(self) -> FrozenTrial | None:
        if self.trial_id is None:
            return None
        trial_id = self.trial_id
        try:
            return self.ctx.persist(
                lambda: self.coordinator.storage.get_trial(trial_id), "reading a trial"
            )
        except KeyError:
            return None


INPUT_ERRORS: tuple[type[BaseException], ...] = (
    DatasetError,
    DataChangedError,
    CheckpointError,
    ValidationError,
)
"""What a trial's data, pretrained checkpoint or configuration got wrong: described without
where in automl it was raised (kept for other errors, which may be automl's own bugs)."""


def _drop_tracebacks(exc: BaseException) -> None:
    """Lets go of the frames of ``exc`` and of the errors it was raised from or during
    (an out-of-memory error in a compiled run's eager retry carries the compile failure)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        error.with_traceback(None)
        pending += [error.__cause__, error.__context__]


def _describe(exc: BaseException) -> str:
    where = _raised_at(exc)
    if isinstance(exc, INPUT_ERRORS):
        where = ""  # the message names the problem; automl's source line is no help to users
    if isinstance(exc, ValidationError):  # its first line only counts the errors
        text = "; ".join(
            f"{'.'.join(map(str, loc))}: {message}" if loc else message
            for loc, message in validation_messages(exc)
        )
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}{where}{_wrapped_cause(exc)}"


def _raised_at(exc: BaseException) -> str:
    """`` (at MODULE:LINE)`` of the line that raised ``exc``, by module name
    (``automl.train.losses``, ``my_plugin.losses``): a plugin's file and automl's may share
    a base name. Empty without a traceback."""
    frame = exc.__traceback__
    if frame is None:
        return ""
    while frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__")
    if not isinstance(module, str) or module == "__main__":
        module = Path(frame.tb_frame.f_code.co_filename).name
    return f" (at {module}:{frame.tb_lineno})"


def _wrapped_cause(exc: BaseException) -> str:
    """Optuna's ``StorageInternalError`` says only "An exception is raised during the
    commit": the driver's error it wraps is what tells why."""
    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, StorageInternalError) or cause is None:
        return ""
    return f" (cause: {type(cause).__name__}: {first_line(cause)})"


def _log(run: TrialRun, spec: StudySpec, seconds: float) -> None:
    """Logs how the attempt ended: a failed trial at WARNING (operators filter on it), any
    other ending at INFO."""
    frozen = run.trial
    number = frozen.number if frozen is not None else "-"
    outcome = run.result
    if run.result == "complete" and frozen is not None and frozen.values is not None:
        outcome += " " + ", ".join(
            f"{name}={value:.4f}" for name, value in zip(spec.metrics, frozen.values, strict=True)
        )
    elif frozen is not None and run.result in ("fail", "released"):
        outcome += ": " + str(frozen.user_attrs.get(attrs.ERROR, ""))
    trial_log.log(
        logging.WARNING if run.result == "fail" else logging.INFO,
        "study %s trial %s (ticket %s, attempt %s) %s (%.1fs)",
        run.lease.study_id,
        number,
        run.lease.ticket_id,
        run.lease.attempt,
        outcome,
        seconds,
    )


__all__ = [
    "ENDED_OUTSIDE",
    "ArtifactsFolderError",
    "ResultRejectedError",
    "TrialContext",
    "TrialRun",
    "fail_if_optuna_study_gone",
    "give_back",
    "run_lease",
]
