"""The heartbeat of a held lease or post-study job: a background thread, so a long epoch
(or loading a large dataset) still beats."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from automl.store import Backoff, Lease, LeaseStatus, is_transient
from automl.worker.coordinator import Coordinator

logger = logging.getLogger("automl.worker")


class LeaseKeeper:
    """Beats for one lease every ``interval`` seconds until stopped.

    ``lost`` is set once the lease is gone (the reaper took it, the study was deleted);
    ``study_ended`` once the study is no longer active (cancelled, failed, timed out);
    ``trial_ended`` once another tool ended the trial (plain optuna-dashboard's "tell").
    Each means: stop training now. Database errors are retried at the next beat and
    logged once per outage.

    Args:
        coordinator: Where to beat.
        lease: The lease to keep.
        interval: Seconds between beats.
        backoff: Shared outage logging.
    """

    def __init__(
        self, coordinator: Coordinator, lease: Lease, interval: float, backoff: Backoff
    ) -> None:
        self.coordinator, self.lease, self.interval = coordinator, lease, interval
        self.backoff = backoff
        self.lost = threading.Event()
        self.study_ended = threading.Event()
        self.trial_ended = threading.Event()
        self._stop = threading.Event()
        self._ending = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{lease.ticket_id}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def should_stop(self) -> bool:
        """Whether the trial must stop (lease lost, study or trial ended)."""
        return self.lost.is_set() or self.study_ended.is_set() or self.trial_ended.is_set()

    def ending(self) -> None:
        """The worker is ending (or giving back) the ticket itself: from now on a beat that
        finds the lease gone or the trial ended found that, not the reaper or another
        tool, and says nothing of it."""
        self._ending.set()

    def beat(self) -> LeaseStatus | None:
        """Beats once now; returns what it learned (None on a database error)."""
        with self._lock:  # the thread and an epoch-end check never beat at once
            try:
                status = self.coordinator.heartbeat(self.lease)
            except Exception as exc:
                if not is_transient(exc):
                    logger.exception("heartbeat of ticket %s failed", self.lease.ticket_id)
                else:
                    self.backoff.failed(exc, "beating")
                return None
        self.backoff.succeeded()
        if not status.held and not self.lost.is_set() and not self._ending.is_set():
            logger.warning(
                "lost the lease of ticket %s (attempt %s): stopping its trial",
                self.lease.ticket_id,
                self.lease.attempt,
            )
            self.lost.set()
        if not status.study_active:
            self.study_ended.set()
        if status.trial_ended and not self.trial_ended.is_set() and not self._ending.is_set():
            logger.warning(
                "the trial of ticket %s was ended by another tool (not automl's worker): "
                "stopping it",
                self.lease.ticket_id,
            )
            self.trial_ended.set()
        return status

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
            if self.lost.is_set():
                return


class JobKeeper:
    """Renews a post-study job's claim (test evaluation, refit) every ``interval`` seconds
    until stopped, so other workers take it over only once this worker is gone.

    ``lost`` is set once the claim is no longer held (another worker took it over, the
    study was resumed or deleted, or the job just ended: what acts on it says which).
    Database errors are retried at the next beat and logged once per outage; any other
    error is logged once and retried too.

    Args:
        beat: Renews the claim once; False if it is no longer held.
        interval: Seconds between beats.
        backoff: Shared outage logging.
        what: The job, as log lines name it ("the refit of study 3").
    """

    def __init__(
        self, beat: Callable[[], bool], interval: float, backoff: Backoff, what: str
    ) -> None:
        self._beat, self.interval, self.backoff, self.what = beat, interval, backoff, what
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def __enter__(self) -> JobKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        told = False
        while not self._stop.wait(self.interval):
            try:
                held = self._beat()
            except Exception as exc:
                if is_transient(exc):
                    self.backoff.failed(exc, "renewing a claim")
                elif not told:
                    logger.warning("cannot renew the claim of %s: %s", self.what, exc)
                    told = True
                continue
            self.backoff.succeeded()
            if not held:
                logger.debug("%s is no longer this worker's", self.what)
                self.lost.set()
                return
