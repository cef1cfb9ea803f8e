"""The worker loop: claim a ticket, run it, repeat; poll when idle; stop gracefully.

Before each claim a worker runs any due test-split evaluation of a completed study (the
best trial(s) scored once on held-out data, see ``automl.worker.evaluator``), so it
happens right after the trial that completed the study, or at the next idle worker when
the reaper or the API completed it; then any due refit of an ended study (its best
configuration retrained on train + validation, see ``automl.worker.refitter``).

Each worker also runs a reaper thread, so lost trials are re-queued even when no API
runs; while the worker claims or runs a trial, it spares the worker's tickets (the
process is alive). During a database outage the worker waits with backoff (logging once
per interval) instead of exiting.

A study whose stored spec this worker cannot read (submitted through a newer automl, or
naming a plugin's entry not installed here) is not its trials' fault: the worker gives
the ticket back untouched, says once what to do, and leaves the study to other workers
for as long as it runs (see ``UnreadableStudyError``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

import optuna
import torch
from optuna.trial import FrozenTrial

from automl.config import unusable_folder
from automl.data.cache import cache_dir, make_cache_dir
from automl.data.errors import DatasetError
from automl.pruners import build_pruner, trial_epochs
from automl.samplers import SHARED_SEED_SAMPLERS, build_sampler
from automl.spec import StudySpec
from automl.spec_reading import UnreadableStudyError, readable_spec
from automl.store import (
    CACHED_STUDIES,
    ArtifactStore,
    Backoff,
    FailureKind,
    FolderArtifactStore,
    Lease,
    Reaper,
    Store,
    is_transient,
    lost_evaluations,
    lost_refits,
    lost_tickets,
    retry_transient,
)
from automl.store.artifacts import TEMPORARY_PREFIX
from automl.store.attrs import EvaluationState
from automl.store.faults import first_line
from automl.train import resolve_device
from automl.train.accel import check_device_settings, release_device_memory
from automl.wording import counted
from automl.worker.coordinator import BufferedSqlCoordinator, Coordinator, CoordinatorTooOldError
from automl.worker.device_faults import DeviceFaultError
from automl.worker.evaluator import describe, run_evaluation
from automl.worker.identity import new_worker_id, sampler_seed
from automl.worker.keeper import JobKeeper, LeaseKeeper
from automl.worker.refitter import run_refit
from automl.worker.runner import (
    ArtifactsFolderError,
    TrialContext,
    TrialRun,
    fail_if_optuna_study_gone,
    give_back,
    run_lease,
)
from automl.worker.slots import DeviceGate, GateAbandoned

RELEASE_BACKOFF_MAX_S = 30.0
"""The longest wait before the next claim after attempts given back in a row."""
POST_STUDY_CHECK_INTERVAL_S = 5.0
"""How often a busy worker looks for due post-study jobs (test evaluations, refits)."""

logger = logging.getLogger("automl.worker")

TrialCallback = Callable[[int, FrozenTrial, str], None]
"""Called with the study id, the attempt's trial and how the attempt ended: ``complete``,
``pruned``, ``fail`` or ``ended_outside`` (another tool ended the trial while it trained;
never ranked) end its ticket; after ``released``, ``lost`` or ``rejected`` the
ticket is the queue's or the reaper's (run again, cancelled with its study, or failed when
out of retries)."""

JobLease = TypeVar("JobLease")


class InvalidDeviceError(ValueError):
    """The worker cannot start on this machine: its device does not exist, or (as
    ``UnusableFolderError``) a folder it writes in cannot be used."""


class UnusableFolderError(InvalidDeviceError):
    """The decode cache or the artifacts folder cannot be created or written in."""


MAX_UNEXPECTED_IN_A_ROW = 3
"""Tickets of one study in a row whose unexpected errors make this worker leave the study
to the others (one is a ticket's problem; several in a row are the study's here)."""


def check_folders(cache: Path, artifacts: ArtifactStore) -> None:
    """Refuses to start a worker whose trials could not write their files.

    Otherwise every trial on an image folder (or a ``gan``) would fail on its own.

    Args:
        cache: The decode cache folder (``AUTOML_CACHE_DIR``), created if missing.
        artifacts: The artifact store; checked when it is a local folder.

    Raises:
        UnusableFolderError: Naming the folder and the variable that sets it.
    """
    try:
        make_cache_dir(cache)
    except DatasetError as exc:
        raise UnusableFolderError(str(exc)) from None
    _probe_write(cache, "cache folder", "AUTOML_CACHE_DIR")
    if isinstance(artifacts, FolderArtifactStore):  # its store created it when opened
        _probe_write(artifacts.directory, "artifacts folder", "AUTOML_ARTIFACTS_DIR")


def _probe_write(directory: Path, what: str, variable: str) -> None:
    """Creates and removes a file in ``directory``: a folder that exists can still be
    read-only (its owner, a read-only mount, an immutable flag)."""
    try:
        # Named as the artifact store's temporary files: a worker killed here leaves one
        # that the reaper's sweep removes (in a cache folder, one empty hidden file).
        handle, name = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise UnusableFolderError(
            unusable_folder(what, directory, variable, exc.strerror or str(exc))
        ) from None


NOT_RUN = frozenset({None, EvaluationState.SKIPPED})
"""What a post-study job that did not run ends in: nothing stored, or a test evaluation
skipped (no test split, no completed trial)."""


@dataclass
class WorkerOptions:
    """How a worker runs.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        study_id: Work only on this study, and exit once it is no longer active.
        poll_interval: Seconds to sleep when there is nothing to claim.
        exit_when_idle: Exit instead of polling when there is nothing to claim.
        threads: CPU threads for PyTorch in this process; several workers on one machine
            should share the cores rather than each use all of them.
        heartbeat_interval: Seconds between heartbeats of the running trial.
        grace_period: Seconds without heartbeat after which a worker counts as lost.
        reap_interval: Seconds between passes of this worker's reaper (None: no reaper).
        checkpoint_interval: Seconds between checkpoints within one long epoch.
        checkpoint_spacing: Least seconds between two checkpoints at epoch ends (0: after
            every epoch; the CLI's default is ``AUTOML_CHECKPOINT_SPACING``, 10 s).
        slot_group: Lock-file prefix shared by the worker processes ("slots") of one
            device (see ``automl.worker.slots``); None when this worker has it alone.
    """

    device: str = "auto"
    study_id: int | None = None
    poll_interval: float = 2.0
    exit_when_idle: bool = False
    threads: int | None = None
    heartbeat_interval: float = 10.0
    grace_period: float = 60.0
    reap_interval: float | None = 15.0
    checkpoint_interval: float = 300.0
    checkpoint_spacing: float = 0.0
    slot_group: str | None = None


class Worker:
    """Claims and trains trials of active studies until stopped.

    ``stop()`` (also wired to SIGINT/SIGTERM by ``install_signal_handlers``) makes the
    trial in hand checkpoint and go back to the queue at its next batch, and the loop
    return.

    Args:
        store: The open store; None for a worker without a database connection (its
            ``coordinator`` is remote, e.g. ``automl proxy``, which also runs the reaper).
        options: How to run.
        on_trial_end: Called after each attempt (see ``TrialCallback``).
        coordinator: The shared state (default: the store's database).
        on_wait: Called when the worker, not exiting when idle, starts waiting for work
            (with ``study_id``: the study's other trials run on other workers).
    """

    def __init__(
        self,
        store: Store | None,
        options: WorkerOptions | None = None,
        on_trial_end: TrialCallback | None = None,
        coordinator: Coordinator | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.options = options or WorkerOptions()
        self.on_trial_end = on_trial_end
        self.on_wait = on_wait
        if coordinator is None:
            if store is None:
                raise ValueError("a worker needs a store or a coordinator")
            coordinator = BufferedSqlCoordinator(store, self.options.grace_period)
        self.coordinator: Coordinator = coordinator
        self.name = new_worker_id()
        try:
            self.device = str(resolve_device(self.options.device))
            check_device_settings()
        except ValueError as exc:
            raise InvalidDeviceError(str(exc)) from None
        check_folders(cache_dir(), self.coordinator.artifacts)
        if self.options.threads is not None:
            torch.set_num_threads(self.options.threads)
        self._stop = threading.Event()
        self._busy = False
        """Claiming or running a trial: its own reaper spares its tickets meanwhile."""
        self._studies: OrderedDict[int, tuple[optuna.Study, StudySpec]] = OrderedDict()
        self._unexpected_in_a_row: dict[int, int] = {}
        """Per study, its tickets in a row that ended with an unexpected error here."""
        self._released_in_a_row = 0
        """Attempts in a row given back for an outage (``_back_off_after``)."""
        self._unreadable: set[int] = set()
        """Studies whose specs this worker cannot read: it claims none of their tickets."""
        self._troubled: set[int] = set()
        """Studies whose tickets kept failing here unexpectedly: it claims none either."""
        self.backoff = Backoff(logger)
        self._refused: set[str] = set()  # post-study jobs whose claim failed outright
        self._jobs_run: Counter[str] = Counter()  # post-study jobs run, by kind
        self._jobs_checked_at = -math.inf
        self._reaping = False  # this worker runs a reaper (``run``)
        self._lost_since: float | None = None  # since when this idle spell waits for them
        self._idle_since: float | None = None  # since when this worker found nothing to run
        self._lost_seen = False  # the last idle pass found some
        self.gate = DeviceGate(options.slot_group, release=release_device_memory)
        self.stopped_by: signal.Signals | None = None
        """The signal that first asked this worker to stop (None: stopped otherwise)."""

    def stop(self) -> None:
        """Asks the loop to stop; safe from signal handlers and other threads."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """Stops gracefully on SIGINT/SIGTERM.

        Repeated signals only repeat the request: a Ctrl-C reaches every process of the
        terminal's group and ``automl up`` forwards a SIGTERM too, and neither may kill a
        worker before it has given its trial back (which happens at the next batch).
        """

        def handle(signum: int, _: FrameType | None) -> None:
            if not self.stopping:
                logger.warning("received %s: stopping", signal.Signals(signum).name)
                self.stopped_by = signal.Signals(signum)
            self.stop()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def run(self) -> int:
        """Runs until stopped (or idle, with ``exit_when_idle``).

        Returns:
            The number of attempts this worker ran.
        """
        logger.info("worker %s started on %s", self.name, self.device)
        reaper = None
        if self.options.reap_interval is not None and self.store is not None:
            reaper = Reaper(
                self.store,
                self.options.grace_period,
                self.options.reap_interval,
                lambda: self.name if self._busy else None,
            )
            reaper.start()
        self._reaping = reaper is not None
        ran = 0
        waiting_told = False
        try:
            while not self.stopping:
                if self._post_study_job():
                    continue
                self._busy = True
                lease = self._claim()
                if lease is None:
                    self._busy = False
                    if self.stopping:
                        break
                    settled = self._settle()
                    if self._post_study_job(always=True):
                        continue
                    if settled and self._idle_exit():
                        break
                    if not waiting_told and not self.options.exit_when_idle:
                        logger.info(
                            "worker %s: nothing to run; waiting for trials (a look every %gs)",
                            self.name,
                            self.options.poll_interval,
                        )
                        if self.on_wait is not None:
                            self.on_wait()
                    waiting_told = True
                    self._stop.wait(self.options.poll_interval)
                    continue
                waiting_told, self._lost_since, self._idle_since = False, None, None
                try:
                    run = self.run_lease(lease)
                except (CoordinatorTooOldError, DeviceFaultError):
                    raise
                except ArtifactsFolderError as exc:
                    raise UnusableFolderError(str(exc)) from None
                except Exception as exc:
                    self._unexpected(lease, exc)
                    self._stop.wait(self.options.poll_interval)
                    continue
                finally:
                    self._busy = False
                self._unexpected_in_a_row.pop(lease.study_id, None)
                ran += 1
                if self.on_trial_end is not None and run.trial is not None:
                    self.on_trial_end(lease.study_id, run.trial, run.result)
                self._back_off_after(run)
        finally:
            if reaper is not None:
                reaper.stop()
        done = [counted(ran, "trial")]
        done += [counted(n, job) for job, n in sorted(self._jobs_run.items())]
        shown = done[0] if len(done) == 1 else f"{', '.join(done[:-1])} and {done[-1]}"
        logger.info("worker %s stopped after %s", self.name, shown)
        return ran

    def _back_off_after(self, run: TrialRun) -> None:
        """Waits after attempts given back in a row for an outage, longer each time up to
        ``RELEASE_BACKOFF_MAX_S``: what gave them back (a full disk, a database away)
        would give the next claim back at once too (a full cache disk made 295 failed
        attempts in 95 s)."""
        if not run.outage or self.stopping:
            self._released_in_a_row = 0
            return
        self._released_in_a_row += 1
        doubled = self.options.poll_interval * 2 ** min(self._released_in_a_row - 1, 16)
        self._stop.wait(min(RELEASE_BACKOFF_MAX_S, doubled))

    def _claim(self) -> Lease | None:
        left = self._unreadable | self._troubled
        if self.options.study_id in left:
            return None  # the one study it serves is one it left
        try:
            lease = retry_transient(
                lambda: self.coordinator.claim(self.name, self.options.study_id, exclude=left),
                backoff=self.backoff,
                doing="claiming a trial",
                give_up=lambda: self.stopping,
                wait=self._stop.wait,
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            return None  # stopping during an outage
        if lease is not None and lease.study_id in left:
            # A proxy older than ``exclude`` cannot skip a study: give its ticket back at
            # once, and idle while that study is the oldest with work.
            logger.debug("study %s is left to others: ticket given back", lease.study_id)
            reason = f"worker {self.name} leaves the study to the others"
            self._give_back_untouched(self._context(), lease, reason)
            return None
        return lease

    def _settle(self) -> bool:
        """Ends the studies that are due (time ran out, or no work left); False during a
        database outage."""
        try:
            self.coordinator.end_due_studies()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.backoff.failed(exc, "checking for work")
            return False
        return True

    def _lost_work(self) -> bool:
        """Whether trials that a lost worker left running (of the study served, else of
        any) wait for this worker's reaper to queue them again, or its test evaluations
        and refits for this worker to take them over: an idle worker with
        ``exit_when_idle`` stays for them rather than leave the study running, or its job
        held, with no worker to take them back."""
        if not self._reaping or self.store is None:
            return False
        try:
            # Two beats missed: a live worker beats again soon (and this one exits then), a
            # killed one stays silent until the reaper takes its trial back (or this worker
            # its job).
            overdue = 2 * self.options.heartbeat_interval
            trials, jobs = self._silent_work(overdue)
            if not trials and not jobs and self._too_soon_to_tell(overdue):
                return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.backoff.failed(exc, "checking for work")
            return True  # unknown while the store is out: stay until it can be told
        if not trials and not jobs:
            again, self._lost_seen = self._lost_seen, False
            return again  # one more pass, to claim what the reaper just queued again
        self._lost_seen = True
        lost = " and ".join(
            counted(count, noun, plural)
            for count, noun, plural in (
                (trials, "trial", "trials"),
                (jobs, "test evaluation or refit", "test evaluations or refits"),
            )
            if count
        )
        if self._lost_since is None:  # from the first sighting of this idle spell
            self._lost_since = time.monotonic()
            logger.info(
                "worker %s: %s whose worker stopped beating; waiting for it to beat again "
                "or for the grace period to hand them over",
                self.name,
                lost,
            )
        # The reaper takes a trial back within about two grace periods of its start and
        # of the trial's last beat (a job is taken over within one and a half of its last
        # beat): past that, it cannot (say, a study it cannot touch), or the work was a
        # live worker's whose beats come further apart than this one's.
        limit = 3 * self.options.grace_period + 2 * (self.options.reap_interval or 0)
        if time.monotonic() - self._lost_since > limit:
            logger.warning(
                "worker %s: %s not handed over within %.0f s; exiting", self.name, lost, limit
            )
            return False
        return True

    def _silent_work(self, silent_for: float) -> tuple[int, int]:
        """The running trials, and the running test evaluations and refits, of the study
        served (else of any; jobs not of studies this worker left) whose worker has not
        beaten for ``silent_for`` seconds."""
        assert self.store is not None
        study_id = self.options.study_id
        left = self._unreadable | self._troubled  # their jobs this worker never claims
        trials = lost_tickets(self.store, silent_for, study_id)
        jobs = lost_evaluations(self.store, silent_for, study_id, left)
        return trials, jobs + lost_refits(self.store, silent_for, study_id, left)

    def _too_soon_to_tell(self, overdue: float) -> bool:
        """Whether work runs whose worker may have died just before this idle spell: its
        last beat is too recent to tell. ``overdue`` seconds into the spell, such a worker
        has beaten again (alive) or its work is overdue (lost)."""
        started = self._idle_since
        if started is None:
            started = self._idle_since = time.monotonic()
        return time.monotonic() - started < overdue and sum(self._silent_work(0.0)) > 0

    def _idle_exit(self) -> bool:
        """Whether an idle worker should exit now."""
        left = self._unreadable | self._troubled
        if self.options.study_id in left:
            return True
        if self.options.exit_when_idle:
            return not self._lost_work()
        if self.options.study_id is None:
            return False
        try:
            status = self.coordinator.status(self.options.study_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.backoff.failed(exc, "checking for work")
            return False
        return status is None or not status.is_active

    def _post_study_job(self, *, always: bool = False) -> bool:
        """Runs one due post-study job (a test evaluation, else a refit); whether it ran one.

        Between trials it asks at most every ``POST_STUDY_CHECK_INTERVAL_S`` (almost every
        pass finds none, and each asks the store twice); an idle worker asks ``always``.
        """
        now = time.monotonic()
        if not always and now - self._jobs_checked_at < POST_STUDY_CHECK_INTERVAL_S:
            return False
        ran = self._evaluate_due() or self._refit_due()
        if ran:
            self._lost_since = self._idle_since = None  # a new idle spell starts after it
        # After a job, ask again at once: a study's evaluation and refit come together.
        self._jobs_checked_at = -math.inf if ran else now
        return ran

    def _evaluate_due(self) -> bool:
        """Runs one due test-split evaluation, if any; whether there was one.

        A failing evaluation is recorded as failed, and a failing claim is logged (the
        next pass asks again).

        Raises:
            DeviceFaultError: After recording a failure that broke the CUDA context.
        """
        return self._run_due(
            "test evaluation",
            lambda left: self.coordinator.claim_evaluation(self.name, self.options.study_id, left),
            self.coordinator.beat_evaluation,
            lambda lease, lost: run_evaluation(
                self.coordinator, lease, self.device, self.backoff, lambda: self.stopping, lost
            ),
        )

    def _refit_due(self) -> bool:
        """Runs one due refit, if any; whether there was one (raises as
        ``_evaluate_due``)."""
        return self._run_due(
            "refit",
            lambda left: self.coordinator.claim_refit(self.name, self.options.study_id, left),
            self.coordinator.beat_refit,
            lambda lease, lost: run_refit(
                self.coordinator, lease, self.device, self.backoff, lambda: self.stopping, lost
            ),
        )

    def _run_due(
        self,
        job: str,
        claim: Callable[[set[int]], JobLease | None],
        beat: Callable[[JobLease], bool],
        run: Callable[[JobLease, Callable[[], bool]], object],
    ) -> bool:
        """Claims one due post-study ``job`` (of none of the studies this worker left) and
        runs it (given whether its claim was lost), beating for it meanwhile; whether there
        was one."""
        left = self._unreadable | self._troubled
        if self.options.study_id in left:
            return False
        try:
            # Beside the other slots' trials, never beside one that must run alone: while
            # such a trial runs (or waits for the device) this slot claims no job, rather
            # than hold one that another machine's worker could run, or wait with nothing.
            with self.gate.hold(False, lambda: True):
                lease = self._claim_due(job, claim, left)
                if lease is None:
                    return False
                what = f"the {job} of study {lease.study_id}"
                keeper = JobKeeper(
                    lambda: beat(lease), self.options.heartbeat_interval, self.backoff, what
                )
                with keeper:
                    ended = run(lease, keeper.lost.is_set)
        except GateAbandoned:
            return False  # the device is another slot's alone for now: nothing claimed
        if ended not in NOT_RUN:  # stored, and not skipped for want of a test split
            self._jobs_run[job] += 1
        return True

    def _claim_due(
        self, job: str, claim: Callable[[set[int]], JobLease | None], left: set[int]
    ) -> JobLease | None:
        """Claims a due ``job`` of none of the studies ``left``; None if there is none or
        the claim failed (logged)."""
        try:
            return claim(left)
        except UnreadableStudyError as exc:
            self._skip_study(exc)  # nothing claimed; the next claims pass it by
        except Exception as exc:
            if is_transient(exc):
                self.backoff.failed(exc, f"looking for {job}s")
            else:  # e.g. a proxy without the call: say so once, keep training
                log = logger.debug if job in self._refused else logger.warning
                log("cannot claim a %s: %s", job, describe(exc))
                self._refused.add(job)
        return None

    def _context(self) -> TrialContext:
        """What running (or giving back) a ticket needs of this worker."""
        return TrialContext(
            coordinator=self.coordinator,
            worker_id=self.name,
            device=self.device,
            stopping=self._stop.is_set,
            checkpoint_interval=self.options.checkpoint_interval,
            checkpoint_spacing=self.options.checkpoint_spacing,
            gate=self.gate,
        )

    def _give_back_untouched(self, ctx: TrialContext, lease: Lease, reason: str) -> TrialRun:
        """Requeues the ticket without using a retry or counting a failure (``give_back``;
        left to the reaper by a worker stopping in an outage: then one of its retries)."""
        return give_back(ctx, lease, FailureKind.INTERRUPTED, reason) or TrialRun(lease, "lost")

    def _unexpected(self, lease: Lease, exc: Exception) -> None:
        """One ticket's unexpected error: a storage fault gives the ticket back (as a
        runner does); anything else (a bug in its bookkeeping) ends it failed with the
        error, and after ``MAX_UNEXPECTED_IN_A_ROW`` in a row of one study this worker
        leaves that study to the others. The worker goes on either way."""
        ticket, study_id, text = lease.ticket_id, lease.study_id, describe(exc)
        if is_transient(exc):
            logger.warning("ticket %s of study %s given back: %s", ticket, study_id, text)
            failure, error, requeue = FailureKind.INTERRUPTED, text, True
        else:
            logger.error(
                "ticket %s of study %s: unexpected error; the worker goes on",
                ticket,
                study_id,
                exc_info=exc,
            )
            failure, error, requeue = FailureKind.ERROR, f"unexpected error: {text}", False
            in_a_row = self._unexpected_in_a_row.get(study_id, 0) + 1
            self._unexpected_in_a_row[study_id] = in_a_row
            if in_a_row >= MAX_UNEXPECTED_IN_A_ROW:
                logger.error(
                    "study %s: %s tickets in a row failed unexpectedly here; this worker "
                    "leaves it to the others",
                    study_id,
                    in_a_row,
                )
                self._troubled.add(study_id)
        try:
            self.coordinator.release(lease, failure, error, requeue=requeue)
        except Exception as release_error:  # the reaper ends it after the grace period
            logger.debug("could not release ticket %s: %s", ticket, release_error)

    def _skip_study(self, exc: UnreadableStudyError) -> None:
        """Leaves a study this worker cannot read to the others, saying so once."""
        if exc.study_id not in self._unreadable:
            logger.error("%s", exc)
        self._unreadable.add(exc.study_id)

    def run_lease(self, lease: Lease) -> TrialRun:
        """Runs one claimed ticket to its end, then settles its study."""
        ctx = self._context()
        interval = self.options.heartbeat_interval
        run: TrialRun | None = None
        try:
            # Beat from the moment of the claim: loading the study can take a while.
            with LeaseKeeper(self.coordinator, lease, interval, self.backoff) as keeper:
                try:
                    study, spec = ctx.persist(
                        lambda: self._study(lease), "loading a study", leave_when_stopping=True
                    )
                except UnreadableStudyError as exc:
                    self._skip_study(exc)
                    keeper.ending()
                    run = self._give_back_untouched(ctx, lease, str(exc))
                    return run
                except Exception as exc:  # e.g. the study was deleted since the claim
                    if ctx.stopping() and is_transient(exc):  # an outage: not the study's fault
                        keeper.ending()
                        why = f"worker stopping: {first_line(exc)}"
                        run = self._give_back_untouched(ctx, lease, why)
                        return run
                    gone = None
                    if isinstance(exc, LookupError):
                        gone = fail_if_optuna_study_gone(ctx, lease.study_id)
                    if gone is None:
                        logger.warning("cannot load study %s: %s", lease.study_id, exc)
                    error = f"cannot load study: {gone or exc}"
                    ctx.persist(
                        lambda: self.coordinator.release(
                            lease, FailureKind.ERROR, error, requeue=False
                        ),
                        "releasing a trial",
                    )
                    run = TrialRun(lease, "fail")
                    return run
                run = run_lease(ctx, lease, study, spec, keeper)
                return run
        finally:
            if run is None or not run.settled:  # a finished ticket settled it already
                try:
                    ctx.persist(
                        lambda: self.coordinator.end_if_done(lease.study_id),
                        "settling a study",
                        leave_when_stopping=True,
                    )
                except Exception as exc:  # the next pass (or the reaper) settles it
                    logger.warning("study %s: settling failed: %s", lease.study_id, first_line(exc))

    def _study(self, lease: Lease) -> tuple[optuna.Study, StudySpec]:
        """The study (kept for the next trial, as its storage keeps its finished trials:
        past ``CACHED_STUDIES`` studies, the one served least recently is forgotten), with
        this attempt's sampler."""
        if lease.study_id in self._studies:
            self._studies.move_to_end(lease.study_id)
        else:
            while len(self._studies) >= CACHED_STUDIES:
                self._studies.popitem(last=False)
            spec = self._readable_spec(lease.study_id)
            study = optuna.load_study(
                study_name=self.coordinator.storage.get_study_name_from_id(lease.study_id),
                storage=self.coordinator.storage,
                pruner=build_pruner(
                    spec.pruner_or_default.name, spec.pruner_or_default.options, trial_epochs(spec)
                ),
            )
            self._studies[lease.study_id] = (study, spec)
        study, spec = self._studies[lease.study_id]
        shared = spec.sampler.name in SHARED_SEED_SAMPLERS
        seed = sampler_seed(lease.seed, lease.ticket_id, lease.attempt, shared)
        own = sampler_seed(lease.seed, lease.ticket_id, lease.attempt, False)
        study.sampler = build_sampler(spec.sampler.name, spec.sampler.options, seed, own)
        return study, spec

    def _readable_spec(self, study_id: int) -> StudySpec:
        """The study's spec.

        Raises:
            UnreadableStudyError: If a newer automl stored it, or it names entries that no
                registry of this worker has.
        """
        return readable_spec(study_id, lambda: self.coordinator.spec(study_id))
