"""Real ``automl worker`` processes for end-to-end tests, and waiting on what they do.

The workers are forked from a server that imported the CLI once (``tests.forked``): each
runs the CLI's ``main`` with its own arguments and environment, in a process of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.store import (
    Store,
    WeightsNotFoundError,
    attrs,
    get_study,
    load_state_dict,
    retain_weights,
    tables,
)
from tests.forked import ForkedProcess

HEARTBEAT_S, GRACE_S, REAP_S = 0.2, 2.0, 0.5
FAST_LEASES = {
    "AUTOML_HEARTBEAT_INTERVAL": str(HEARTBEAT_S),
    "AUTOML_GRACE_PERIOD": str(GRACE_S),
    "AUTOML_REAP_INTERVAL": str(REAP_S),
    "AUTOML_POLL_INTERVAL": "0.2",
    # Epochs here take milliseconds: without it, a killed worker's trial would have no
    # checkpoint to resume from, which these tests check it does.
    "AUTOML_CHECKPOINT_SPACING": "0",
}
STUDY_TIMEOUT_S = 240
SMALL_TRAIN = {"source": "digits", "options": {"val_fraction": 0.9}}
"""180 training images: epochs of a few batches, so trials are short but many epochs long."""


class Fleet:
    """Real ``automl worker`` processes on one storage URL, started and killed at will."""

    def __init__(
        self, url: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.url, self.tmp_path, self.extra = url, tmp_path, extra
        self.env = {**FAST_LEASES, **(env or {})}
        self.processes: list[ForkedProcess] = []
        self.logs: list[Path] = []

    def start(self, count: int = 1) -> None:
        """Starts ``count`` more workers."""
        for _ in range(count):
            log = self.tmp_path / f"worker{len(self.logs)}.log"
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
            default_artifacts = str(self.tmp_path / "artifacts")
            env["AUTOML_ARTIFACTS_DIR"] = self.env.get("AUTOML_ARTIFACTS_DIR", default_artifacts)
            env.pop("AUTOML_STORAGE", None)
            command = ["--log-level", "INFO", "worker", "--storage", self.url]
            command += ["--device", "cpu", "--threads", "1", *self.extra]
            self.processes.append(ForkedProcess(command, env, log))
            self.logs.append(log)

    def alive(self) -> list[ForkedProcess]:
        """The workers still running."""
        return [process for process in self.processes if process.poll() is None]

    def output(self) -> str:
        """Every worker's log."""
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def stop(self) -> None:
        """Kills whatever still runs."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def running_holders(store: Store, study_id: int, min_epochs: int = 1) -> dict[int, int]:
    """pid -> ticket of the workers holding a ticket whose trial reported ``min_epochs``."""
    with store.read() as connection:
        rows = connection.execute(
            sa.select(
                tables.tickets.c.ticket_id, tables.tickets.c.worker_id, tables.tickets.c.trial_id
            ).where(tables.tickets.c.study_id == study_id, tables.tickets.c.state == "running")
        ).all()
    holders = {}
    for ticket_id, worker_id, trial_id in rows:
        if trial_id is None:
            continue
        if len(store.storage.get_trial(trial_id).intermediate_values) >= min_epochs:
            holders[int(worker_id.split(":")[-2])] = ticket_id
    return holders


def wait_for(
    condition: Callable[[], bool], what: str, output: Callable[[], str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{output()}")
        time.sleep(0.1)


def wait_for_end(store: Store, study_id: int, fleet: Fleet) -> None:
    wait_for(
        lambda: not get_study(store, study_id).status.is_active,
        f"study {study_id} to end",
        lambda: f"{get_study(store, study_id)}\n{fleet.output()}",
        STUDY_TIMEOUT_S,
    )


def check_intact(store: Store, trial: FrozenTrial, epochs: int) -> None:
    """A completed trial has its value, full curve and history, and readable weights
    (unless they were deleted because it fell out of the study's ``keep_weights``)."""
    assert trial.state == TrialState.COMPLETE
    assert trial.values is not None and 0 <= trial.values[0] <= 1
    assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
    assert len(trial.user_attrs[attrs.HISTORY]) == epochs
    if attrs.WEIGHTS_REMOVED in trial.user_attrs:
        assert attrs.WEIGHTS not in trial.user_attrs
        return
    try:
        weights = load_state_dict(trial, store.artifacts)
    except WeightsNotFoundError:
        # The last trial's retention pass can outlast the study's end: it removes weights
        # after the caller read ``trial``, then records why.
        deadline = time.monotonic() + 30
        while attrs.WEIGHTS_REMOVED not in store.storage.get_trial(trial._trial_id).user_attrs:
            assert time.monotonic() < deadline, f"trial {trial.number}: weights gone, no reason"
            time.sleep(0.1)
        return
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())


def check_kept_weights(store: Store, study_id: int, keep: int = 3) -> None:
    """Exactly the study's ``keep`` best trials hold weights, all readable: racing workers
    deleted the weights of the trials that fell out and never those of one still in.

    One more retention pass first, as the next completed trial would run (a worker killed
    between its trial's end and its pass leaves that to the next one).
    """
    retain_weights(store, study_id)
    trials = store.storage.get_all_trials(study_id)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    best = sorted(complete, key=lambda t: (-t.values[0], t.number))[:keep]
    holding = [t.number for t in trials if attrs.WEIGHTS in t.user_attrs]
    assert holding == sorted(t.number for t in best)
    for trial in best:
        assert load_state_dict(trial, store.artifacts)
