"""The worker loop: claim a trial, run it, repeat; poll when idle; stop gracefully."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import optuna
import sqlalchemy
import torch
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from automl.pruners import build_pruner
from automl.samplers import build_sampler
from automl.spec import StudySpec
from automl.store import (
    INTERRUPTED_PREFIX,
    NoQueuedTrialError,
    active_study_ids,
    attrs,
    get_status,
    is_timed_out,
    load_spec,
    mark_running,
    settle_study,
)
from automl.train import resolve_device
from automl.worker.runner import Claim, run_trial

logger = logging.getLogger("automl.worker")

TrialCallback = Callable[[int, FrozenTrial], None]


class InvalidDeviceError(ValueError):
    """The worker's device does not exist on this machine."""


@dataclass
class WorkerOptions:
    """How a worker runs.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        study_id: Work only on this study, and exit once it is no longer active.
        poll_interval: Seconds to sleep when there is nothing to claim.
        exit_when_idle: Exit instead of polling when there is nothing to claim.
        artifacts_dir: Folder of the artifact store for weights.
        seed_offset: Added to a spec's sampler seed, so that workers started together
            propose different configurations; ``None`` derives it from the process id.
        threads: CPU threads for PyTorch in this process; several workers on one machine
            should share the cores rather than each use all of them.
    """

    device: str = "auto"
    study_id: int | None = None
    poll_interval: float = 2.0
    exit_when_idle: bool = False
    artifacts_dir: Path = field(default_factory=lambda: Path("automl-artifacts"))
    seed_offset: int | None = None
    threads: int | None = None


class Worker:
    """Claims and trains trials of active studies until stopped.

    ``stop()`` (also wired to SIGINT/SIGTERM by ``install_signal_handlers``) makes the
    trial in hand end at its next batch as FAIL ("interrupted") and the loop return.
    """

    def __init__(
        self,
        storage: BaseStorage,
        options: WorkerOptions | None = None,
        on_trial_end: TrialCallback | None = None,
    ) -> None:
        self.storage = storage
        self.options = options or WorkerOptions()
        self.on_trial_end = on_trial_end
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self.device = str(resolve_device(self.options.device))
        except ValueError as exc:
            raise InvalidDeviceError(str(exc)) from None
        if self.options.threads is not None:
            torch.set_num_threads(self.options.threads)
        self._stop = threading.Event()
        self._studies: dict[int, tuple[optuna.Study, StudySpec]] = {}
        offset = self.options.seed_offset
        self._seed_offset = os.getpid() if offset is None else offset

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
        worker before it has ended its trial (which happens at the next batch).
        """

        def handle(signum: int, _: FrameType | None) -> None:
            if not self.stopping:
                logger.warning("received %s: stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def run(self) -> int:
        """Runs until stopped (or idle, with ``exit_when_idle``).

        Returns:
            The number of trials this worker ran.
        """
        logger.info("worker %s started on %s", self.name, self.device)
        ran = 0
        while not self.stopping:
            try:
                claim = self.claim()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                # The database may be restarting; keep the worker alive and try again.
                logger.warning("storage error while claiming, retrying: %s", exc)
                self._stop.wait(self.options.poll_interval)
                continue
            if claim is None:
                if self.options.exit_when_idle or self._dedicated_study_ended():
                    break
                self._stop.wait(self.options.poll_interval)
                continue
            frozen = self.run_claim(claim)
            ran += 1
            if self.on_trial_end is not None:
                self.on_trial_end(claim.study_id, frozen)
        logger.info("worker %s stopped after %d trials", self.name, ran)
        return ran

    def claim(self) -> Claim | None:
        """Claims the next queued trial of an active study, oldest study first."""
        for study_id in self._candidate_ids():
            if self.stopping:
                return None
            if is_timed_out(self.storage, study_id):
                settle_study(self.storage, study_id)
                continue
            study, spec = self._study(study_id)
            try:
                trial = study.ask()
            except NoQueuedTrialError:
                settle_study(self.storage, study_id)
                continue
            if not get_status(self.storage, study_id).is_active:
                # Cancelled between listing and claiming: the claim cannot be undone,
                # so end it visibly instead of training.
                message = f"{INTERRUPTED_PREFIX} study is no longer active"
                trial.set_user_attr(attrs.ERROR, message)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            mark_running(self.storage, study_id)
            self.storage.set_trial_user_attr(trial._trial_id, attrs.WORKER, self.name)
            return Claim(study_id, study, trial, spec)
        return None

    def run_claim(self, claim: Claim) -> FrozenTrial:
        """Runs a claimed trial to its end, then updates the study's status."""
        try:
            return run_trial(
                self.storage,
                claim,
                device=self.device,
                artifacts_dir=self.options.artifacts_dir,
                should_stop=self._stop.is_set,
            )
        finally:
            settle_study(self.storage, claim.study_id)

    def _candidate_ids(self) -> list[int]:
        if self.options.study_id is None:
            return active_study_ids(self.storage)
        return [sid for sid in active_study_ids(self.storage) if sid == self.options.study_id]

    def _dedicated_study_ended(self) -> bool:
        if self.options.study_id is None:
            return False
        return not get_status(self.storage, self.options.study_id).is_active

    def _study(self, study_id: int) -> tuple[optuna.Study, StudySpec]:
        if study_id not in self._studies:
            spec = load_spec(self.storage, study_id)
            seed = spec.sampler.seed
            if seed is not None:
                seed = (seed + self._seed_offset) % 2**32
            study = optuna.load_study(
                study_name=self.storage.get_study_name_from_id(study_id),
                storage=self.storage,
                sampler=build_sampler(spec.sampler.name, spec.sampler.options, seed),
                pruner=build_pruner(spec.pruner_or_default.name, spec.pruner_or_default.options),
            )
            self._studies[study_id] = (study, spec)
        return self._studies[study_id]
