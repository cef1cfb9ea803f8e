"""Several trial processes on one device ("slots"), and a trial that must run alone.

``automl worker --slots K`` starts K worker processes per device. They train side by
side; a trial that ran out of memory beside others is queued again marked ``exclusive``
and then runs with the device to itself. The slots of one device share a *slot group*:
two lock files that work as a turnstile (``flock``, so a crashed process releases its
locks with its file descriptors):

- an ordinary trial passes the gate (shared) and holds the device lock shared;
- an exclusive trial closes the gate (exclusive), so no new trial starts on the device,
  waits for the running ones to end by taking the device lock exclusive, runs, and
  opens both.

Each slot returns the memory its trial freed to the device (``release``) before it lets go
of the device lock: a CUDA process keeps freed memory reserved for itself otherwise, and a
trial that runs alone would find as little free memory as the attempt that ran out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one slot per device, no gate needed
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

POLL_S = 0.2


class GateAbandoned(RuntimeError):
    """The wait for the device ended because the worker stops or lost its lease."""


class DeviceGate:
    """The slot group of one device; without a group every trial just runs.

    Args:
        group: Path prefix of the group's lock files (``<group>.gate``, ``<group>.device``),
            the same for every slot of the device; None when the worker has the device
            to itself.
        poll: Seconds between tries while waiting.
        release: Called at the end of every hold of a slot group, before the device lock
            is let go: returns what the process freed to the device.
    """

    def __init__(
        self, group: str | None, poll: float = POLL_S, release: Callable[[], None] | None = None
    ) -> None:
        self.group = group if fcntl is not None else None
        self.poll = poll
        self.release = release
        if self.group is not None:
            Path(self.group).parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def hold(self, exclusive: bool, abandon: Callable[[], bool]) -> Iterator[None]:
        """Holds the device for one trial: shared with the other slots, or alone.

        Args:
            exclusive: Run alone: wait until the other slots' trials end, and keep new
                ones from starting meanwhile.
            abandon: Polled while waiting; when it returns True the wait ends.

        Raises:
            GateAbandoned: If ``abandon`` said so before the device was free.
        """
        if self.group is None:
            yield
            return
        with self._open("gate") as gate, self._open("device") as device:
            if exclusive:
                self._lock(gate, fcntl.LOCK_EX, abandon)
                try:
                    self._lock(device, fcntl.LOCK_EX, abandon)
                except GateAbandoned:
                    fcntl.flock(gate, fcntl.LOCK_UN)
                    raise
            else:
                self._lock(gate, fcntl.LOCK_SH, abandon)
                try:
                    self._lock(device, fcntl.LOCK_SH, abandon)
                finally:
                    fcntl.flock(gate, fcntl.LOCK_UN)
            try:
                yield
            finally:
                trial_failed = sys.exc_info()[1] is not None
                try:
                    if self.release is not None:
                        self.release()
                except Exception as exc:  # a CUDA context a fault broke frees nothing
                    # After a trial that failed, its own error says why; after one that
                    # did not, this may be the first sign of a fault.
                    log = logger.debug if trial_failed else logger.warning
                    log("returning device memory failed: %s", exc)
                finally:
                    fcntl.flock(device, fcntl.LOCK_UN)
                if exclusive:
                    fcntl.flock(gate, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[int]:
        fd = os.open(f"{self.group}.{name}", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)

    def _lock(self, fd: int, mode: int, abandon: Callable[[], bool]) -> None:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if abandon():
                    raise GateAbandoned("stopped while waiting for the device") from None
                time.sleep(self.poll)
