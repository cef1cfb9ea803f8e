"""The worker loop: in-process workers on both backends, then real worker processes."""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import torch
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import StorageInternalError
from optuna.trial import FrozenTrial, TrialState

import automl.store.study_caches
import automl.train.imbalance
import automl.worker.coordinator
import automl.worker.loop
import automl.worker.runner
from automl.spec import StudySpec
from automl.store import (
    Backoff,
    FolderArtifactStore,
    Lease,
    NoBestTrialError,
    Store,
    StudyCaches,
    StudyStatus,
    attrs,
    best_trials,
    cancel_study,
    delete_study,
    enqueue_trials,
    get_status,
    get_study,
    load_state_dict,
    optuna_rows,
    outranked_reason,
    reap_stale,
    rerun_failed,
    resume_study,
    submit_study,
    tables,
)
from automl.store.retention import OPTUNA_ARTIFACT_ATTR
from automl.store.shared_artifacts import SHARED_USE_PREFIX, shared_artifact_id
from automl.worker import DeviceFaultError, SqlCoordinator, Worker, WorkerOptions
from automl.worker.coordinator import BufferedSqlCoordinator
from automl.worker.identity import new_worker_id, sampler_seed, training_seed
from automl.worker.keeper import LeaseKeeper
from automl.worker.loop import UnusableFolderError
from automl.worker.runner import LEAVING_TRIES, OPTIONAL_WRITE_TRIES
from tests.conftest import store_at
from tests.data.conftest import write_class_folder
from tests.forked import ForkedProcess
from tests.store.conftest import start_trial
from tests.worker.options import fast_options

SpecFactory = Callable[..., StudySpec]

LONG_TRIAL = {"epochs": 300, "width": 8, "depth": 1, "batch_size": 128}
"""A trial that trains for a long while, long enough to be caught RUNNING."""
RESUMABLE_TRIAL = {**LONG_TRIAL, "epochs": 8}
"""A trial stopped after its first epoch, then run to its end."""


def _options(**overrides: Any) -> WorkerOptions:
    return fast_options(**{"grace_period": 30.0, **overrides})


def _trials(store: Store, study_id: int) -> list[FrozenTrial]:
    return store.storage.get_all_trials(study_id)


def _states(store: Store, study_id: int) -> list[TrialState]:
    return [trial.state for trial in _trials(store, study_id)]


def _wait_for_running_trial(
    url: str, study_id: int, tmp_path: Path, timeout_s: float = 90, epochs: int = 1
) -> bool:
    """Polls a store of its own until a running trial of the study has trained ``epochs``
    (0: until one runs)."""
    watcher = store_at(url, tmp_path)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            running = watcher.storage.get_all_trials(
                study_id, deepcopy=False, states=(TrialState.RUNNING,)
            )
            if any(len(trial.intermediate_values) >= epochs for trial in running):
                return True
            time.sleep(0.05)
        return False
    finally:
        watcher.close()


@pytest.fixture
def held_until_told_to_stop(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """While the event is set, a trial waits after each epoch until its worker is told to
    stop (a cancel seen, ``stop()``), so the stop lands mid-trial however slow the machine
    is (on a loaded one a short trial could end first). Clear it to let trials run."""
    holding = threading.Event()
    holding.set()
    real_train = automl.worker.runner.train

    def held(config: Any, reporter: Callable[[int, dict[str, float]], bool], **kwargs: Any) -> Any:
        should_stop = kwargs["should_stop"]

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            verdict = reporter(epoch, metrics)
            deadline = time.monotonic() + 60
            while holding.is_set() and not should_stop() and time.monotonic() < deadline:
                time.sleep(0.02)
            return verdict

        return real_train(config, report, **kwargs)

    monkeypatch.setattr(automl.worker.runner, "train", held)
    return holding


@pytest.fixture
def in_background() -> Iterator[Callable[[Callable[[], None]], threading.Thread]]:
    """Starts functions in threads, and joins them at the end of the test."""
    threads: list[threading.Thread] = []

    def start(target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.join(timeout=60)


# --- in-process workers ------------------------------------------------------------------------


def test_worker_runs_study_to_completion(store: Store, tiny_spec: SpecFactory) -> None:
    spec = tiny_spec(budget={"n_trials": 4, "max_failed": 0}, keep_weights="all")  # keep all
    study_id = submit_study(store, spec).id
    ended: list[tuple[int, FrozenTrial]] = []
    worker = Worker(store, _options(), on_trial_end=lambda s, t, _: ended.append((s, t)))

    assert worker.run() == 4

    detail = get_study(store, study_id)
    assert (detail.status, detail.status_reason) == (StudyStatus.COMPLETED, "all trials finished")
    assert detail.started_at is not None and detail.finished_at is not None
    assert (detail.counts.complete, detail.counts.waiting, detail.counts.running) == (4, 0, 0)
    assert [(s, t.number, t.state) for s, t in ended] == [
        (study_id, n, TrialState.COMPLETE) for n in range(4)
    ]
    for trial in _trials(store, study_id):
        user_attrs = trial.user_attrs
        metrics = user_attrs[attrs.METRICS]
        assert trial.values == [pytest.approx(metrics["accuracy"])]
        config = user_attrs[attrs.CONFIG]
        model = config["model"]["options"]
        assert (config["epochs"], model["width"], model["depth"]) == (1, 8, 1)
        assert config["optimizer"]["name"] == trial.params["optimizer"]
        assert config["lr"] == pytest.approx(trial.params["lr"])
        assert trial.intermediate_values == {1: pytest.approx(metrics["accuracy"])}
        assert user_attrs[attrs.WORKER] == worker.name
        assert user_attrs[attrs.ATTEMPT] == 1
        assert attrs.ERROR not in user_attrs and attrs.FAILURE not in user_attrs
        weights = load_state_dict(trial, store.artifacts)
        assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
    assert best_trials(store, study_id).trials[0].values == [pytest.approx(detail.best_value)]


def test_a_trial_writes_through_the_coordination_calls_only(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running trial is a local copy: no param, report or attribute goes through
    Optuna's storage one by one, and the trial is never read back from the database."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    calls: Counter[str] = Counter()
    for name in (
        "_set_trial_param",
        "set_trial_param",
        "set_trial_intermediate_value",
        "set_trial_user_attr",
        "set_trial_system_attr",
        "get_trial",
    ):
        real = getattr(store.storage, name)

        def counting(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(store.storage, name, counting)

    assert Worker(store, _options()).run() == 2

    # Reads of the best trial only, by the study's test evaluation at the end (its claim
    # and its scoring).
    assert calls["get_trial"] <= 2 and sum(calls.values()) == calls["get_trial"], calls
    for trial in _trials(store, study_id):
        assert trial.state == TrialState.COMPLETE and trial.params and trial.intermediate_values
        assert attrs.CONFIG in trial.user_attrs and attrs.WEIGHTS in trial.user_attrs


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed")),
        StorageInternalError("An exception is raised during the commit."),
    ],
    ids=["sqlalchemy", "optuna-wrapped"],
)
def test_storage_errors_while_claiming_are_waited_out(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    if isinstance(error, StorageInternalError):
        error.__cause__ = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("gone"))
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2})).id
    real = SqlCoordinator.claim
    calls = {"n": 0}

    def flaky(self: SqlCoordinator, worker_id: str, only: int | None, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise error
        return real(self, worker_id, only, **kwargs)

    monkeypatch.setattr(SqlCoordinator, "claim", flaky)
    assert Worker(sqlite_store, _options()).run() == 2
    assert calls["n"] > 2
    assert get_study(sqlite_store, study_id).status == StudyStatus.COMPLETED


def test_a_full_disk_while_saving_weights_is_waited_out_not_a_failure(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from the artifact store once failed the trial (counted in max_failed) and
    threw its trained model away; a full disk is an outage, like the database's."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    real = automl.worker.runner.save_weights
    calls = {"n": 0}

    def full_disk_twice(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(automl.worker.runner, "save_weights", full_disk_twice)
    assert Worker(sqlite_store, _options()).run() == 1
    assert calls["n"] == 3
    [trial] = _trials(sqlite_store, study_id)
    assert trial.state == TrialState.COMPLETE and attrs.WEIGHTS in trial.user_attrs
    assert get_study(sqlite_store, study_id).status == StudyStatus.COMPLETED


def test_a_full_disk_while_checkpointing_skips_the_checkpoint_and_training_goes_on(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once retried forever, the heartbeat renewing the lease: the trial stayed running."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 2})
    study_id = submit_study(sqlite_store, spec).id
    calls = {"n": 0}

    def full_disk(*args: Any) -> None:
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SqlCoordinator, "save_checkpoint", full_disk)
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)
    assert Worker(sqlite_store, _options()).run() == 1
    assert calls["n"] == OPTIONAL_WRITE_TRIES  # after epoch 1; none after the last one
    [trial] = _trials(sqlite_store, study_id)
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2]


def test_checkpoints_on_a_full_disk_are_tried_once_quietly_until_there_is_room(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once each epoch's checkpoint waited and logged two warnings anew."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 4})
    submit_study(sqlite_store, spec)
    real, calls = SqlCoordinator.save_checkpoint, {"n": 0}

    def full_for_a_while(self: SqlCoordinator, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= OPTIONAL_WRITE_TRIES + 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, *args)

    monkeypatch.setattr(SqlCoordinator, "save_checkpoint", full_for_a_while)
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)
    caplog.set_level(logging.INFO, logger="automl.worker")
    assert Worker(sqlite_store, _options()).run() == 1

    # epoch 1: the tries of one wait; epoch 2: one try; epoch 3: saved.
    assert calls["n"] == OPTIONAL_WRITE_TRIES + 2
    said = [r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage()]
    assert [line for line in said if "failed" in line and "ticket" in line] == [
        "checkpoint of ticket 1 failed: [Errno 28] No space left on device; the next ones "
        "are tried once until there is room"
    ]
    assert "checkpoints of ticket 1 are saved again" in said


def test_a_database_outage_while_checkpointing_is_waited_out(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a full disk gives a checkpoint up: one taken at a stop must survive a restart."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 2})
    study_id = submit_study(sqlite_store, spec).id
    real, calls = SqlCoordinator.save_checkpoint, {"n": 0}

    def down_for_a_while(self: SqlCoordinator, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= 2 * OPTIONAL_WRITE_TRIES:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed"))
        real(self, *args)

    monkeypatch.setattr(SqlCoordinator, "save_checkpoint", down_for_a_while)
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)
    assert Worker(sqlite_store, _options()).run() == 1
    assert calls["n"] == 2 * OPTIONAL_WRITE_TRIES + 1
    with sqlite_store.read() as connection:
        [ticket] = connection.execute(sqlalchemy.select(tables.tickets)).all()
    assert ticket.outcome == "complete"
    [trial] = _trials(sqlite_store, study_id)
    assert trial.state == TrialState.COMPLETE


def test_a_claim_whose_answer_is_lost_trains_that_ticket(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a claim committed while its answer was lost stayed running unseen
    until the reaper failed it unrun, while the worker trained another ticket."""
    spec = tiny_spec(budget={"n_trials": 2, "max_failed": 0, "max_retries": 0})
    study_id = submit_study(sqlite_store, spec).id
    real, answers = SqlCoordinator.claim, {"lost": 0}

    def answer_lost_once(self: SqlCoordinator, *args: Any, **kwargs: Any) -> Lease | None:
        lease = real(self, *args, **kwargs)
        if lease is not None and not answers["lost"]:
            answers["lost"] += 1
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed"))
        return lease

    monkeypatch.setattr(SqlCoordinator, "claim", answer_lost_once)
    monkeypatch.setattr(automl.worker.loop, "Backoff", _fast_backoff)

    assert Worker(sqlite_store, _options()).run() == 2

    assert answers["lost"] == 1
    with sqlite_store.read() as connection:
        tickets = connection.execute(sqlalchemy.select(tables.tickets)).all()
    assert [(t.ticket_id, t.outcome, t.attempt) for t in tickets] == [
        (1, "complete", 1),
        (2, "complete", 1),
    ]
    assert _states(sqlite_store, study_id) == [TrialState.COMPLETE] * 2


def test_a_model_card_is_stored_again_after_a_database_error(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: one cut connection left a trial without its model card for good."""
    submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1, "max_failed": 0}))
    real, calls = automl.worker.runner.save_model_card, {"n": 0}

    def cut_once(*args: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed"))
        return real(*args)

    monkeypatch.setattr(automl.worker.runner, "save_model_card", cut_once)
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)

    assert Worker(sqlite_store, _options()).run() == 1

    assert calls["n"] == 2
    with sqlite_store.read() as connection:
        [trial_id] = connection.scalars(sqlalchemy.select(tables.tickets.c.trial_id)).all()
    recorded = sqlite_store.storage.get_trial(trial_id).system_attrs
    assert [key for key in recorded if key.startswith(OPTUNA_ARTIFACT_ATTR)], recorded


def _fast_backoff(logger: logging.Logger) -> Backoff:
    return Backoff(logger, first=0.001, cap=0.001)


def test_a_stopping_worker_stops_waiting_for_disk_space_and_gives_the_trial_back(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once SIGTERM and SIGINT were ignored while the weights waited for space."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    worker = Worker(sqlite_store, _options())
    calls = {"n": 0}

    def full_disk(*args: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            worker.stop()  # as SIGTERM would, while the disk stays full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(automl.worker.runner, "save_weights", full_disk)
    assert worker.run() == 1
    assert calls["n"] == 2
    [trial] = _trials(sqlite_store, study_id)
    assert (trial.state, trial.user_attrs[attrs.FAILURE]) == (TrialState.FAIL, "interrupted")
    detail = get_study(sqlite_store, study_id)
    assert (detail.status, detail.counts.waiting) == (StudyStatus.RUNNING, 1)  # queued again


class _Outage:
    """Calls that fail as in a database outage, each stopping the worker first (as SIGTERM
    would, during the outage); counts them by name."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.calls = Counter[str]()

    def failing(self, name: str) -> Callable[..., None]:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls[name] += 1
            self.worker.stop()
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("server closed"))

        return call

    def run(self, caplog: pytest.LogCaptureFixture) -> None:
        """Runs the worker; fails if it is still waiting for the database after 60 s."""
        done = threading.Thread(target=self.worker.run, daemon=True)
        with caplog.at_level(logging.WARNING, "automl.worker"):
            done.start()
            done.join(60)
        assert not done.is_alive(), "the stopping worker kept waiting for the database"


def test_a_stopping_worker_stops_waiting_for_the_database_and_leaves_the_trial_to_the_reaper(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a tester: SIGTERM and SIGINT were ignored for as long as the database was
    away (minutes), while the worker retried its last checkpoint and giving its trial back:
    the reaper does both for a worker that left."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 50})
    study_id = submit_study(sqlite_store, spec).id
    outage = _Outage(Worker(sqlite_store, _options()))
    monkeypatch.setattr(SqlCoordinator, "save_checkpoint", outage.failing("checkpoint"))
    monkeypatch.setattr(SqlCoordinator, "release", outage.failing("release"))
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)

    outage.run(caplog)

    # Each given up after LEAVING_TRIES: the epoch's checkpoint, then the stop's.
    assert (outage.calls["checkpoint"], outage.calls["release"]) == (
        2 * LEAVING_TRIES,
        LEAVING_TRIES,
    )
    assert "is left to the reaper" in caplog.text
    with sqlite_store.read() as connection:
        [ticket] = connection.execute(sqlalchemy.select(tables.tickets)).all()
    assert ticket.state == "running"  # the reaper's to take back once its beats are overdue
    assert get_study(sqlite_store, study_id).status == StudyStatus.RUNNING


def test_a_worker_stopping_while_it_loads_a_study_in_an_outage_leaves_the_ticket(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The outage met while loading the claimed ticket's study (a reviewer): not the
    study's fault (its ticket is not failed), and no wait past the stop."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1})).id
    outage = _Outage(Worker(sqlite_store, _options()))
    monkeypatch.setattr(automl.worker.loop.Worker, "_study", outage.failing("load"))
    monkeypatch.setattr(SqlCoordinator, "release", outage.failing("release"))
    monkeypatch.setattr(automl.worker.runner, "Backoff", _fast_backoff)

    outage.run(caplog)

    assert (outage.calls["load"], outage.calls["release"]) == (LEAVING_TRIES, LEAVING_TRIES)
    assert "ticket 1 (trial -) is left to the reaper" in caplog.text
    with sqlite_store.read() as connection:
        [ticket] = connection.execute(sqlalchemy.select(tables.tickets)).all()
    assert (ticket.state, ticket.outcome) == ("running", None)  # not failed: the reaper's
    assert get_study(sqlite_store, study_id).status == StudyStatus.RUNNING


def test_database_error_after_the_claim_gives_the_ticket_back(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 1})).id
    # The worker's one funnel for new trials (its transaction commits, then it raises).
    real = automl.worker.coordinator.create_trial
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> tuple[int, int]:
        calls["n"] += 1
        created = real(*args, **kwargs)  # created, then the answer is lost
        if calls["n"] == 1:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("connection reset"))
        return created

    monkeypatch.setattr(automl.worker.coordinator, "create_trial", flaky)
    assert Worker(sqlite_store, _options()).run() == 2

    first, second = _trials(sqlite_store, study_id)
    assert (first.state, first.user_attrs[attrs.FAILURE]) == (TrialState.FAIL, "interrupted")
    assert second.state == TrialState.COMPLETE
    detail = get_study(sqlite_store, study_id)
    assert (detail.status, detail.counts.complete) == (StudyStatus.COMPLETED, 1)


def test_sampler_error_after_the_claim_fails_the_ticket(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: an error in before_trial left the trial RUNNING forever."""

    class BrokenSampler(optuna.samplers.RandomSampler):
        def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
            raise RuntimeError("sampler broke")

    monkeypatch.setattr(automl.worker.loop, "build_sampler", lambda *a: BrokenSampler())
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id

    assert Worker(store, _options()).run() == 1

    [trial] = _trials(store, study_id)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[attrs.FAILURE] == "error"
    assert "sampler broke" in trial.user_attrs[attrs.ERROR]
    detail = get_study(store, study_id)
    assert (detail.status, detail.counts.running, detail.counts.waiting) == (
        StudyStatus.FAILED,
        0,
        0,
    )


def test_attempts_given_back_in_a_row_wait_longer_each_time(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: with a disk full, every attempt was given back (an outage, no
    retry used) and claimed again at once: 295 failed attempts in 95 s."""

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(automl.worker.runner, "train", disk_full)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    worker = Worker(store, _options(poll_interval=0.05, exit_when_idle=False))
    waits: list[float] = []
    real_wait = worker._stop.wait

    def recorded(timeout: float | None = None) -> bool:
        waits.append(float(timeout or 0))
        if len(waits) == 7:
            worker.stop()
        return real_wait(timeout)

    monkeypatch.setattr(worker._stop, "wait", recorded)
    worker.run()

    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert _states(store, study_id) == [TrialState.FAIL] * 7  # each attempt given back
    assert get_study(store, study_id).counts.fail == 0  # none counted toward max_failed


def test_an_artifacts_folder_that_cannot_be_written_stops_the_worker_not_the_study(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: with the artifacts folder made read-only (or deleted, or
    replaced by a file) under a worker, each trial trained, then failed as an error:
    three queued studies ended failed within a minute. (A folder store: SQLite's.)"""
    store = sqlite_store
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    real_write = FolderArtifactStore._write

    def read_only(self: FolderArtifactStore, artifact_id: str, body: Any, durable: bool) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self.directory / ".tmp-x"))

    monkeypatch.setattr(FolderArtifactStore, "_write", read_only)
    with pytest.raises(UnusableFolderError) as caught:
        Worker(store, _options()).run()

    assert str(caught.value).startswith(
        f"cannot use the artifacts folder '{store.artifacts.directory}' "
        "(AUTOML_ARTIFACTS_DIR): Read-only file system;"
    )
    [given_back] = _trials(store, study_id)
    assert given_back.user_attrs[attrs.FAILURE] == "interrupted"
    study = get_study(store, study_id)
    assert study.status.is_active and (study.counts.fail, study.counts.waiting) == (0, 1)

    monkeypatch.setattr(FolderArtifactStore, "_write", real_write)
    assert Worker(store, _options()).run() == 1
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


def test_a_checkpoint_the_artifacts_folder_refuses_stops_the_worker_at_once(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: with the folder made read-only mid-trial, each checkpoint failed
    with a warning and the trial trained to its last epoch, only to be given back then."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 30})
    study_id = submit_study(sqlite_store, spec).id
    writes: list[str] = []

    def read_only(self: FolderArtifactStore, artifact_id: str, body: Any, durable: bool) -> None:
        writes.append(artifact_id)
        raise OSError(errno.EROFS, "Read-only file system", str(self.directory / ".tmp-x"))

    monkeypatch.setattr(FolderArtifactStore, "_write", read_only)
    with pytest.raises(UnusableFolderError):
        Worker(sqlite_store, _options(checkpoint_spacing=0.0)).run()

    assert len(writes) == 1  # the first epoch's checkpoint: no 29 more, no weights
    [given_back] = _trials(sqlite_store, study_id)
    assert given_back.user_attrs[attrs.FAILURE] == "interrupted"


def test_failing_trials_fail_the_study_and_leave_nothing_waiting(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_train(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(automl.worker.runner, "train", broken_train)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 5, "max_failed": 1})).id

    assert Worker(store, _options()).run() == 2

    detail = get_study(store, study_id)
    assert (detail.status, detail.status_reason) == (
        StudyStatus.FAILED,
        "2 trials failed (max_failed is 1)",
    )
    assert (detail.counts.fail, detail.counts.waiting) == (2, 0)
    for trial in _trials(store, study_id):
        assert trial.user_attrs[attrs.ERROR].startswith("RuntimeError: boom")
        assert trial.user_attrs[attrs.FAILURE] == "error"
        assert attrs.CONFIG in trial.user_attrs


def test_a_failed_trial_is_logged_as_a_warning(
    sqlite_store: Store,
    tiny_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once at INFO like a completed one: operators who filter on WARNING missed it."""
    real, calls = automl.worker.runner.train, {"n": 0}

    def fails_first(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(automl.worker.runner, "train", fails_first)
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 2, "max_failed": 1})).id
    caplog.set_level(logging.INFO, logger="automl.worker")

    Worker(sqlite_store, _options()).run()

    ended = [r for r in caplog.records if r.getMessage().startswith(f"study {study_id} trial ")]
    assert [r.levelno for r in ended] == [logging.WARNING, logging.INFO]
    assert "trial 0 (ticket 1, attempt 1) fail: RuntimeError: boom" in ended[0].getMessage()
    assert "trial 1 (ticket 2, attempt 1) complete accuracy=" in ended[1].getMessage()


def test_a_failed_trial_keeps_the_reason_of_a_validation_error(
    store: Store, tiny_spec: SpecFactory, data_root: Path
) -> None:
    """A dataset folder removed after submission: once stored as "ValidationError: 1
    validation error for TrialConfig", now with the field and the reason."""
    write_class_folder(data_root / "gone", {"a": 2, "b": 2})
    dataset = {"source": "image_folder", "options": {"path": "gone", "size": 8}}
    study_id = submit_study(store, tiny_spec(dataset=dataset, budget={"n_trials": 1})).id
    shutil.rmtree(data_root / "gone")

    Worker(store, _options()).run()

    [trial] = _trials(store, study_id)
    assert trial.user_attrs[attrs.ERROR].startswith(
        "ValidationError: dataset.path: folder 'gone' not found under the data root"
    )
    # Its params were recorded although the configuration never built: once the folder is
    # back, rerun-failed repeats them (it once ran freshly sampled ones).
    assert trial.params
    write_class_folder(data_root / "gone", {"a": 2, "b": 2})
    rerun_failed(store, study_id)
    Worker(store, _options()).run()
    _, again = _trials(store, study_id)
    assert again.state == TrialState.COMPLETE
    assert again.params == trial.params


def test_epoch_ends_beat_except_the_last_whose_report_travels_with_the_tell(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    epoch_end_beats: list[str] = []
    real_beat = LeaseKeeper.beat

    def recording(keeper: LeaseKeeper) -> Any:
        if threading.current_thread() is threading.main_thread():  # not the keeper's own
            epoch_end_beats.append(keeper.lease.key)
        return real_beat(keeper)

    monkeypatch.setattr(LeaseKeeper, "beat", recording)
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 3})
    study_id = submit_study(store, spec).id
    assert Worker(store, _options(heartbeat_interval=60.0)).run() == 1

    [trial] = _trials(store, study_id)
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert len(epoch_end_beats) == 2  # after epochs 1 and 2


def test_a_trial_another_tool_ends_stops_at_its_next_beat_and_is_never_ranked(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain optuna-dashboard's "tell" on a running trial of automl's: its worker stops
    training at the next beat (it trained to its last epoch before), and the made-up
    value never ranks; the worker ends the ticket as told, at once (the ``ended_outside``
    result), not the reaper a grace period later."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={**LONG_TRIAL, "epochs": 20})
    study_id = submit_study(store, spec).id
    real_beat = LeaseKeeper.beat

    def told_before_the_first_epoch_end_beat(keeper: LeaseKeeper) -> Any:
        if threading.current_thread() is threading.main_thread():
            for trial in store.storage.get_all_trials(study_id, states=(TrialState.RUNNING,)):
                store.storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
        return real_beat(keeper)

    monkeypatch.setattr(LeaseKeeper, "beat", told_before_the_first_epoch_end_beat)
    ended: list[str] = []
    Worker(store, _options(), on_trial_end=lambda _, __, result: ended.append(result)).run()

    assert ended == ["ended_outside"]  # by the worker: no reaper runs here
    [trial] = _trials(store, study_id)
    assert (trial.state, trial.values) == (TrialState.COMPLETE, [1.0])
    assert len(trial.intermediate_values) <= 1  # stopped after its first epoch of 20
    assert attrs.METRICS not in trial.user_attrs
    study = get_study(store, study_id)
    assert (study.status, study.counts.complete, study.best_value) == ("completed", 1, None)
    with pytest.raises(NoBestTrialError, match="without a completed trial"):
        best_trials(store, study_id)


def test_a_trial_another_tool_ends_just_before_its_tell_is_settled_as_told(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tell after the last epoch (no beat follows): the worker's own tell finds
    the trial ended with another value, so it is no result of automl's, and the ticket
    ends as told then, not a grace period later (a reviewer)."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={"epochs": 1})
    study_id = submit_study(store, spec).id
    real_save = automl.worker.runner.save_weights

    def told_then_saved(storage: Any, trial: optuna.Trial, *args: Any) -> str:
        store.storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [1.0])
        return real_save(storage, trial, *args)

    monkeypatch.setattr(automl.worker.runner, "save_weights", told_then_saved)
    ended: list[str] = []
    Worker(store, _options(), on_trial_end=lambda _, __, result: ended.append(result)).run()

    assert ended == ["ended_outside"]
    [trial] = _trials(store, study_id)
    assert (trial.state, trial.values) == (TrialState.COMPLETE, [1.0])
    assert attrs.WEIGHTS not in trial.user_attrs  # the attempt's upload was removed
    assert get_study(store, study_id).status == StudyStatus.COMPLETED
    assert get_study(store, study_id).best_value is None


def test_a_workers_own_reaper_never_takes_its_live_trial(
    store: Store, tiny_spec: SpecFactory
) -> None:
    # Beats far apart and a grace period shorter than an epoch: as when a long SQLite
    # lock delays the beat. Any other reaper would take the trial; this worker's does not.
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed={**LONG_TRIAL, "epochs": 2})
    study_id = submit_study(store, spec).id
    options = _options(heartbeat_interval=60.0, grace_period=0.01, reap_interval=0.01)

    assert Worker(store, options).run() == 1

    [trial] = _trials(store, study_id)
    assert (trial.state, trial.user_attrs[attrs.ATTEMPT]) == (TrialState.COMPLETE, 1)
    assert sorted(trial.intermediate_values) == [1, 2]


@pytest.mark.parametrize("started_after", [0.0, 0.5], ids=["at-once", "two-beats-later"])
def test_an_idle_worker_exits_only_once_its_reaper_requeued_a_lost_workers_trial(
    store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture, started_after: float
) -> None:
    """Found by a tester: after a kill -9, ``worker --exit-when-idle`` found nothing queued
    and exited before its reaper's first pass, leaving the study running for good. Started
    two beats after the kill (a verifier's case) or at once (a tester's: the last beat was
    too recent to tell a dead worker from a live one)."""
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0})
    study_id = submit_study(store, spec).id
    start_trial(store, study_id, worker="killed")  # its beats stopped at once
    time.sleep(started_after)
    options = _options(heartbeat_interval=0.2, grace_period=1.0, reap_interval=0.2)

    with caplog.at_level(logging.INFO, logger="automl.worker"):
        assert Worker(store, options).run() == 1

    assert "1 trial whose worker stopped beating; waiting for it to beat again" in caplog.text
    assert get_status(store, study_id) == StudyStatus.COMPLETED
    assert sorted(_states(store, study_id)) == sorted([TrialState.FAIL, TrialState.COMPLETE])


def test_a_result_refused_after_a_reap_leaves_no_weights_or_card_behind(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes naming them are refused with the tell: nothing would remove them."""
    uploaded: list[str] = []
    real_weights, real_card = (
        automl.worker.runner.save_weights,
        automl.worker.runner.save_model_card,
    )

    def weights(*args: Any) -> str:
        uploaded.append(real_weights(*args))
        return uploaded[-1]

    def card_then_reaped(trial: optuna.Trial, *args: Any) -> str:
        uploaded.append(real_card(trial, *args))
        # As the reaper would, just before the tell: the ticket taken, the trial failed.
        # The reaper's order (the ticket's row locked first, as the heartbeat locks it):
        # the other order can deadlock with a beat on PostgreSQL.
        with store.write() as connection:
            connection.execute(
                tables.tickets.update()
                .where(tables.tickets.c.ticket_id == lease.ticket_id)
                .values(state="pending", worker_id=None, heartbeat_at=None)
            )
            optuna_rows.fail_running_trial(connection, trial._trial_id, {})
        return uploaded[-1]

    monkeypatch.setattr(automl.worker.runner, "save_weights", weights)
    monkeypatch.setattr(automl.worker.runner, "save_model_card", card_then_reaped)
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 1})
    study_id = submit_study(store, spec).id
    worker = Worker(store, _options())
    lease = worker.coordinator.claim(worker.name, study_id)
    assert lease is not None
    assert worker.run_lease(lease).result == "rejected"

    assert len(uploaded) == 2
    for artifact_id in uploaded:
        with pytest.raises(ArtifactNotFound):
            store.artifacts.open_reader(artifact_id)
    assert _states(store, study_id) == [TrialState.FAIL]


def test_a_trial_already_outranked_saves_no_weights(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention would delete them at once: each later trial scores worse than the first."""
    scores = iter([0.9, 0.8, 0.9])  # the third ties the first: the lower number ranks above
    real_train, real_save = automl.worker.runner.train, automl.worker.runner.save_weights
    saved: list[int] = []

    def scored(*args: Any, **kwargs: Any) -> Any:
        result = real_train(*args, **kwargs)
        return dataclasses.replace(result, metrics={**result.metrics, "accuracy": next(scores)})

    def counting(storage: Any, trial: optuna.Trial, *args: Any) -> str:
        saved.append(trial.number)
        return real_save(storage, trial, *args)

    monkeypatch.setattr(automl.worker.runner, "train", scored)
    monkeypatch.setattr(automl.worker.runner, "save_weights", counting)
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0}, keep_weights=1)
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 3

    assert saved == [0]
    first, *later = _trials(store, study_id)
    assert load_state_dict(first, store.artifacts)
    for trial in later:
        assert trial.state == TrialState.COMPLETE and attrs.WEIGHTS not in trial.user_attrs
        assert trial.user_attrs[attrs.WEIGHTS_REMOVED] == outranked_reason(1)


OUT_OF_MEMORY_ERRORS = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    # Allocation failures that arrive as other errors (found by review):
    torch.AcceleratorError("CUDA error: out of memory"),  # a new process's context
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY_ERRORS, ids=lambda e: str(e)[:24])
def test_out_of_memory_runs_again_alone_once(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def oom(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(automl.worker.runner, "train", oom)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    Worker(store, _options()).run()

    first, second = _trials(store, study_id)
    assert [t.user_attrs[attrs.FAILURE] for t in (first, second)] == ["out_of_memory"] * 2
    assert [t.user_attrs[attrs.ATTEMPT] for t in (first, second)] == [1, 2]
    assert second.params == first.params  # the same configuration, run alone
    with store.read() as connection:
        ticket = connection.execute(sqlalchemy.select(tables.tickets)).one()
    assert (ticket.exclusive, ticket.state, ticket.failure) == (True, "done", "out_of_memory")
    # Not counted toward max_failed (0) as a config error; the study failed as it got nothing.
    detail = get_study(store, study_id)
    assert (detail.status, detail.status_reason) == (
        StudyStatus.FAILED,
        "all trials finished, none with a result",
    )


def test_out_of_memory_in_one_slot_is_retried_alone_and_the_others_finish(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_train = automl.worker.runner.train
    failed_once = threading.Lock()

    def train_or_run_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        if failed_once.acquire(blocking=False):
            time.sleep(0.3)  # beside the other slot's trial
            raise torch.OutOfMemoryError("CUDA out of memory")
        time.sleep(0.2)  # long enough that the two slots' trials surely overlap
        return real_train(*args, **kwargs)

    monkeypatch.setattr(automl.worker.runner, "train", train_or_run_out_of_memory)
    spec = tiny_spec(
        budget={"n_trials": 6, "max_failed": 0},
        fixed={"epochs": 3, "width": 8, "depth": 1, "batch_size": 64},
    )
    study_id = submit_study(sqlite_store, spec).id
    group = str(tmp_path / "slots" / "cpu")
    slots = [Worker(sqlite_store, _options(slot_group=group, threads=1)) for _ in range(2)]
    threads = [threading.Thread(target=worker.run) for worker in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    trials = _trials(sqlite_store, study_id)
    [lost] = [t for t in trials if t.state == TrialState.FAIL]
    assert lost.user_attrs[attrs.FAILURE] == "out_of_memory"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and get_status(sqlite_store, study_id) == StudyStatus.COMPLETED
    [alone] = [t for t in complete if t.user_attrs[attrs.TICKET] == lost.user_attrs[attrs.TICKET]]
    others = [t for t in complete if t is not alone]

    def overlap(a: FrozenTrial, b: FrozenTrial) -> bool:
        assert a.datetime_complete is not None and b.datetime_complete is not None
        return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete

    assert not [t.number for t in others if overlap(t, alone)]  # nothing ran beside it
    assert any(overlap(a, b) for a in others for b in others if a is not b)  # slots did


def _first_training_fails(monkeypatch: pytest.MonkeyPatch, fault: Exception) -> None:
    """The worker's first training raises ``fault``; the later ones train."""
    real_train = automl.worker.runner.train
    faults = iter([fault])

    def train_or_fault(*args: Any, **kwargs: Any) -> Any:
        first = next(faults, None)
        if first is not None:
            raise first
        return real_train(*args, **kwargs)

    monkeypatch.setattr(automl.worker.runner, "train", train_or_fault)


def test_a_cuda_error_fails_its_trial_and_stops_the_worker(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a device-side assert or an illegal address every CUDA call of the process
    fails: the worker stops (to be restarted clean) instead of failing every later trial
    toward ``max_failed``."""
    _first_training_fails(
        monkeypatch, torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    )
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 2})).id
    with pytest.raises(DeviceFaultError, match=r"trial 0 of study .* unusable .*illegal memory"):
        Worker(store, _options()).run()
    [failed] = _trials(store, study_id)
    assert failed.state == TrialState.FAIL
    assert "AcceleratorError: CUDA error: an illegal memory" in failed.user_attrs[attrs.ERROR]
    assert get_status(store, study_id) == StudyStatus.RUNNING

    assert Worker(store, _options()).run() == 2  # a new process runs the rest of the budget
    states = [t.state for t in _trials(store, study_id)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert get_status(store, study_id) == StudyStatus.COMPLETED


def test_a_cuda_error_of_one_model_fails_only_its_trial(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: errors that leave the context working (no kernel for this GPU, a
    launch configuration) stopped the worker on every such trial."""
    _first_training_fails(  # as PyTorch words it, its hint about assertions included
        monkeypatch,
        torch.AcceleratorError(
            "CUDA error: no kernel image is available for execution on the device\n"
            "CUDA kernel errors might be asynchronously reported at some other API call, so "
            "the stacktrace below might be incorrect.\nFor debugging consider passing "
            "CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side "
            "assertions.\n"
        ),
    )
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 2})).id
    assert Worker(store, _options()).run() == 2
    assert [t.state for t in _trials(store, study_id)] == [TrialState.FAIL, TrialState.COMPLETE]


def test_conditional_params_and_distinct_proposals(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 8, "max_failed": 0})).id
    Worker(store, _options()).run()
    trials = _trials(store, study_id)
    assert {t.params["optimizer"] for t in trials} == {"adam", "sgd"}
    assert len({t.params["lr"] for t in trials}) == 8  # a seed per ticket, none repeated
    for trial in trials:
        sgd = trial.params["optimizer"] == "sgd"
        assert set(trial.params) == {"optimizer", "lr", *(["momentum"] if sgd else [])}


def test_enqueued_configs_run_with_their_params(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    enqueue_trials(sqlite_store, study_id, [{"optimizer": "sgd", "lr": 0.002, "momentum": 0.6}])
    Worker(sqlite_store, _options()).run()
    first = _trials(sqlite_store, study_id)[0]
    assert first.params == {"optimizer": "sgd", "lr": 0.002, "momentum": 0.6}
    assert first.user_attrs[attrs.CONFIG]["optimizer"]["options"]["momentum"] == pytest.approx(0.6)


def _threshold_study(store: Store, tiny_spec: SpecFactory, epochs: int) -> int:
    """Two trials of ``epochs`` epochs under a pruner that prunes every trial it is asked
    about (a study searching 1 or 3 epochs: one fixed at 1 is refused, as never pruned):
    a loss above 0 (a bound past every value, such as ``lower: 2`` on accuracy, is refused
    as pruning every trial)."""
    spec = tiny_spec(
        budget={"n_trials": 2, "max_failed": 0},
        objective={"metric": "loss"},
        pruner={"name": "threshold", "options": {"upper": 0.0}},
        fixed={"width": 8, "depth": 1, "batch_size": 128, "lr": 0.005},
        params={"epochs": {"type": "categorical", "choices": [1, 3]}},
    )
    study_id = submit_study(store, spec).id
    enqueue_trials(store, study_id, [{"epochs": epochs}, {"epochs": epochs}])
    assert Worker(store, _options()).run() == 2
    return study_id


def test_threshold_pruner_prunes_every_trial(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = _threshold_study(store, tiny_spec, epochs=3)
    detail = get_study(store, study_id)
    assert (detail.status, detail.counts.pruned) == (StudyStatus.COMPLETED, 2)
    for trial in _trials(store, study_id):
        assert list(trial.intermediate_values) == [1]
        assert attrs.WEIGHTS not in trial.user_attrs
    with pytest.raises(NoBestTrialError):
        best_trials(store, study_id)


def test_a_trial_that_trained_to_its_last_epoch_is_not_pruned(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Pruning after the last epoch would save nothing and discard a trained model."""
    study_id = _threshold_study(store, tiny_spec, epochs=1)
    assert get_study(store, study_id).counts.complete == 2
    assert all(attrs.WEIGHTS in trial.user_attrs for trial in _trials(store, study_id))


def test_stop_before_run_claims_nothing(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec()).id
    worker = Worker(store, _options())
    worker.stop()
    assert worker.run() == 0
    assert get_study(store, study_id).counts.waiting == 3


def test_stop_releases_the_trial_and_the_next_worker_resumes_it(
    store: Store,
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    in_background: Callable[[Callable[[], None]], threading.Thread],
    held_until_told_to_stop: threading.Event,
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 1, "max_failed": 0, "max_retries": 0}, fixed=RESUMABLE_TRIAL
    )
    study_id = submit_study(store, spec).id
    first = Worker(store, _options())

    def stop_when_running() -> None:
        _wait_for_running_trial(storage_url, study_id, tmp_path)
        first.stop()

    in_background(stop_when_running)
    assert first.run() == 1
    [interrupted] = _trials(store, study_id)
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs[attrs.FAILURE] == "interrupted"
    counts = get_study(store, study_id).counts
    assert (counts.waiting, counts.fail) == (1, 0)  # back in the queue, no retry used

    held_until_told_to_stop.clear()
    second = Worker(store, _options())
    assert second.run() == 1
    _, resumed = _trials(store, study_id)
    assert resumed.state == TrialState.COMPLETE
    assert resumed.params == interrupted.params
    assert resumed.user_attrs[attrs.CONFIG] == interrupted.user_attrs[attrs.CONFIG]  # seed too
    start = resumed.user_attrs[attrs.RESUMED_FROM_EPOCH]
    assert start >= 1
    steps = sorted(resumed.intermediate_values)
    assert steps == list(range(1, RESUMABLE_TRIAL["epochs"] + 1))  # continued, no step twice
    for step in range(1, start + 1):
        assert resumed.intermediate_values[step] == interrupted.intermediate_values[step]
    assert len(resumed.user_attrs[attrs.HISTORY]) == RESUMABLE_TRIAL["epochs"]
    assert get_study(store, study_id).status == StudyStatus.COMPLETED
    with store.read() as connection:  # the finished trial's checkpoint is gone
        assert connection.scalar(sqlalchemy.select(tables.tickets.c.checkpoint)) is None


def test_cancel_stops_the_running_trial_and_resume_continues_it(
    store: Store,
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    in_background: Callable[[Callable[[], None]], threading.Thread],
    held_until_told_to_stop: threading.Event,
) -> None:
    spec = tiny_spec(budget={"n_trials": 2, "max_failed": 0}, fixed=RESUMABLE_TRIAL)
    study_id = submit_study(store, spec).id

    def cancel_when_running() -> None:
        if _wait_for_running_trial(storage_url, study_id, tmp_path):
            canceller = store_at(storage_url, tmp_path)
            cancel_study(canceller, study_id)
            canceller.close()

    in_background(cancel_when_running)
    assert Worker(store, _options()).run() == 1

    detail = get_study(store, study_id)
    assert detail.status == StudyStatus.CANCELLED
    # The stopped trial and the unit never handed out: a resume runs both.
    assert (detail.counts.cancelled, detail.counts.waiting, detail.counts.running) == (2, 0, 0)
    [stopped] = _trials(store, study_id)
    assert stopped.user_attrs[attrs.FAILURE] == "cancelled"
    assert len(stopped.intermediate_values) < RESUMABLE_TRIAL["epochs"]

    held_until_told_to_stop.clear()
    resume_study(store, study_id)
    options = _options(study_id=study_id)
    claimed = Worker(store, options)
    claimed.run_lease(SqlCoordinator(store).claim(claimed.name, study_id))  # type: ignore[arg-type]
    resumed = _trials(store, study_id)[1]
    assert resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[attrs.RESUMED_FROM_EPOCH] >= 1


def test_a_reaped_trial_rejects_its_late_result(
    store: Store,
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that stopped beating (stalled) is reaped; the result it tells later is refused."""
    monkeypatch.setattr(LeaseKeeper, "beat", lambda self: None)
    real_train = automl.worker.runner.train
    reaped: list[int] = []

    def train_then_get_reaped(*args: Any, **kwargs: Any) -> Any:
        result = real_train(*args, **kwargs)
        reaper = store_at(storage_url, tmp_path)  # another process's reaper, meanwhile
        try:
            reaped.extend(r.ticket_id for r in reap_stale(reaper, grace=0))
        finally:
            reaper.close()
        return result

    monkeypatch.setattr(automl.worker.runner, "train", train_then_get_reaped)
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    stalled = Worker(store, _options())
    claim = SqlCoordinator(store).claim(stalled.name, None)
    assert claim is not None

    run = stalled.run_lease(claim)

    assert reaped == [claim.ticket_id]
    assert run.result == "rejected"
    [trial] = _trials(store, study_id)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[attrs.FAILURE] == "worker_lost"
    assert attrs.WEIGHTS not in trial.user_attrs
    counts = get_study(store, study_id).counts
    assert (counts.complete, counts.waiting) == (0, 1)  # counted once: it will run again


def test_worker_claims_oldest_study_first(store: Store, tiny_spec: SpecFactory) -> None:
    first = submit_study(store, tiny_spec(name="first", budget={"n_trials": 2})).id
    second = submit_study(store, tiny_spec(name="second", budget={"n_trials": 2})).id
    order: list[int] = []
    Worker(store, _options(), on_trial_end=lambda s, t, _: order.append(s)).run()
    assert order == [first, first, second, second]


@pytest.mark.timeout(120)
def test_worker_for_one_study_exits_when_it_ends(store: Store, tiny_spec: SpecFactory) -> None:
    other = submit_study(store, tiny_spec(name="other")).id
    mine = submit_study(store, tiny_spec(name="mine", budget={"n_trials": 2})).id
    options = _options(study_id=mine, exit_when_idle=False)
    assert Worker(store, options).run() == 2
    assert get_status(store, mine) == StudyStatus.COMPLETED
    assert get_study(store, other).counts.waiting == 3
    cancel_study(store, other)
    assert Worker(store, _options(study_id=other, exit_when_idle=False)).run() == 0


def test_timeout_budget_ends_the_study_after_the_trial_in_progress(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 5, "max_failed": 0, "timeout": 0.001})
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 1
    detail = get_study(store, study_id)
    assert (detail.status, detail.status_reason) == (StudyStatus.COMPLETED, "timeout reached")
    assert (detail.counts.complete, detail.counts.waiting) == (1, 0)


def test_multi_objective_study_records_every_objective(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(
        objective=None,
        objectives=[{"metric": "accuracy"}, {"metric": "loss"}],
        pruner=None,
        budget={"n_trials": 2, "max_failed": 0},
    )
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 2
    for trial in _trials(store, study_id):
        metrics = trial.user_attrs[attrs.METRICS]
        assert trial.values == [pytest.approx(metrics["accuracy"]), pytest.approx(metrics["loss"])]
    study = optuna.load_study(study_name="tiny", storage=store.storage)
    assert study.user_attrs[attrs.STATUS] == "completed"
    assert 1 <= len(best_trials(store, study_id).trials) <= 2


def test_a_trial_records_what_its_imbalance_strategy_reports(
    store: Store, tiny_spec: SpecFactory, data_root: Path
) -> None:
    """The GAN's training time (and how many images it added) reaches the trial's view,
    with the shared generator it used, which goes with the study."""
    fixed = {"epochs": 1, "width": 8, "depth": 1, "imbalance": "gan", "gan_steps": 2}
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 0}, fixed=fixed)
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 1
    [trial] = best_trials(store, study_id).trials
    assert trial.notes is not None
    assert trial.notes["gan_train_seconds"] > 0 and trial.notes["gan_samples"] > 0
    recorded = store.storage.get_study_system_attrs(study_id)
    [key] = [k.removeprefix(SHARED_USE_PREFIX) for k in recorded if k.startswith(SHARED_USE_PREFIX)]
    assert key.startswith("gan-") and key.endswith("-0-2")
    store.artifacts.open_reader(shared_artifact_id(key)).close()

    delete_study(store, study_id)

    with pytest.raises(ArtifactNotFound):
        store.artifacts.open_reader(shared_artifact_id(key))


def test_a_generator_whose_only_trial_failed_goes_with_its_study(
    sqlite_store: Store, tiny_spec: SpecFactory, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: recorded only by the trials that ended well, the generator of a
    study whose trials failed or were cancelled stayed for good (up to 214 MB)."""
    fixed = {"epochs": 1, "width": 8, "depth": 1, "imbalance": "gan", "gan_steps": 2}
    spec = tiny_spec(budget={"n_trials": 1, "max_failed": 1, "max_retries": 0}, fixed=fixed)
    study_id = submit_study(sqlite_store, spec).id

    def fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("after the generator was made")

    monkeypatch.setattr(automl.train.imbalance, "synthesize", fails)
    assert Worker(sqlite_store, _options()).run() == 1
    assert _states(sqlite_store, study_id) == [TrialState.FAIL]
    made = [name for name in _artifact_ids(sqlite_store) if name.startswith("shared-gan-")]
    assert len(made) == 1

    delete_study(sqlite_store, study_id)

    assert [name for name in _artifact_ids(sqlite_store) if name.startswith("shared-")] == []


def _artifact_ids(store: Store) -> list[str]:
    folder = store.artifacts
    assert isinstance(folder, FolderArtifactStore)
    return sorted(path.name for path in folder.directory.iterdir())


def test_each_trial_trains_with_its_own_seed_from_the_study_seed_and_its_ticket(
    store: Store, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0})
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 3
    with store.read() as connection:
        seed_of = sqlalchemy.select(tables.studies.c.seed)
        study_seed = connection.scalar(seed_of.where(tables.studies.c.study_id == study_id))
    seeds = {
        trial.user_attrs[attrs.TICKET]: trial.user_attrs[attrs.CONFIG]["seed"]
        for trial in _trials(store, study_id)
    }
    assert seeds == {ticket: training_seed(study_seed, ticket) for ticket in seeds}
    assert len(set(seeds.values())) == 3
    for trial in _trials(store, study_id):  # restore_best: the best epoch's metrics
        history = trial.user_attrs[attrs.HISTORY]
        best = max(history, key=lambda entry: (entry["accuracy"], entry["epoch"]))
        assert trial.user_attrs[attrs.BEST_EPOCH] == best["epoch"]
        assert trial.value == best["accuracy"]


def test_a_fixed_seed_is_every_trials_seed(store: Store, tiny_spec: SpecFactory) -> None:
    fixed = {**tiny_spec().fixed, "seed": 5}
    spec = tiny_spec(budget={"n_trials": 2, "max_failed": 0}, fixed=fixed)
    study_id = submit_study(store, spec).id
    assert Worker(store, _options()).run() == 2
    assert [t.user_attrs[attrs.CONFIG]["seed"] for t in _trials(store, study_id)] == [5, 5]


def test_worker_ids_and_seeds_are_unique() -> None:
    assert len({new_worker_id() for _ in range(100)}) == 100
    seeds = {sampler_seed(42, ticket, 1, shared=False) for ticket in range(1000)}
    assert len(seeds) == 1000
    assert sampler_seed(42, 1, 1, shared=False) == sampler_seed(42, 1, 1, shared=False)
    assert sampler_seed(42, 1, 1, shared=False) != sampler_seed(42, 1, 2, shared=False)
    assert {sampler_seed(42, ticket, 1, shared=True) for ticket in range(10)} == {42}
    assert len({training_seed(42, ticket) for ticket in range(1000)}) == 1000
    assert training_seed(42, 1) == training_seed(42, 1) != training_seed(43, 1)


# --- real worker processes ---------------------------------------------------------------------


def _start_worker(
    url: str, tmp_path: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> ForkedProcess:
    """An ``automl worker`` process on ``url`` (forked: see ``tests.forked``), logging to
    ``log``."""
    command = ["--log-level", "INFO", "worker", "--storage", url, "--device", "cpu"]
    command += ["--artifacts-dir", str(tmp_path / "artifacts"), *extra]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("AUTOML_STORAGE", None)
    return ForkedProcess(command, full_env, log, cwd=tmp_path)


def _kill(process: ForkedProcess) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_processes_racing_run_exactly_the_budget(
    sqlite_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    """Fresh budget units on SQLite; tests/e2e/test_many_workers.py races eight processes
    for enqueued configurations on PostgreSQL."""
    storage_url = sqlite_url
    store = store_at(storage_url, tmp_path)

    try:
        study_id = submit_study(store, tiny_spec(budget={"n_trials": 6, "max_failed": 6})).id
        logs = [tmp_path / f"worker{i}.log" for i in range(3)]
        workers = [_start_worker(storage_url, tmp_path, log, "--exit-when-idle") for log in logs]
        try:
            codes = [process.wait(timeout=120) for process in workers]
        finally:
            for process in workers:
                _kill(process)
        output = "\n".join(log.read_text() for log in logs)
        assert codes == [0, 0, 0], output

        trials = _trials(store, study_id)
        assert sorted(t.number for t in trials) == list(range(6))
        assert all(t.state.is_finished() for t in trials)
        detail = get_study(store, study_id)
        assert (detail.counts.finished, detail.status) == (6, StudyStatus.COMPLETED)
        assert len({t.user_attrs[attrs.WORKER] for t in trials}) >= 1
    finally:
        store.close()


@pytest.mark.slow
def test_sigterm_checkpoints_and_releases_the_trial(
    sqlite_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    store = store_at(sqlite_url, tmp_path)
    try:
        spec = tiny_spec(
            budget={"n_trials": 3, "max_failed": 0, "max_retries": 0}, fixed=LONG_TRIAL
        )
        study_id = submit_study(store, spec).id
        log = tmp_path / "worker.log"
        process = _start_worker(sqlite_url, tmp_path, log)
        try:
            assert _wait_for_running_trial(sqlite_url, study_id, tmp_path), log.read_text()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
        finally:
            _kill(process)
        assert code == 0, log.read_text()
        assert "received SIGTERM: stopping" in log.read_text()

        [trial] = _trials(store, study_id)
        assert (trial.state, trial.user_attrs[attrs.FAILURE]) == (TrialState.FAIL, "interrupted")
        detail = get_study(store, study_id)
        assert (detail.counts.waiting, detail.counts.fail, detail.counts.running) == (3, 0, 0)
        with store.read() as connection:
            checkpoint = connection.scalar(sqlalchemy.select(tables.tickets.c.checkpoint))
        assert checkpoint is not None  # the next worker resumes from it
        assert detail.status == StudyStatus.RUNNING
    finally:
        store.close()


def test_a_busy_worker_looks_for_post_study_jobs_only_now_and_then(
    sqlite_store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between trials the evaluation and refit queues are asked at most every few
    seconds, not before every claim; once idle, the worker still finds the study's
    test evaluation at once."""
    study_id = submit_study(sqlite_store, tiny_spec(budget={"n_trials": 6})).id
    asked: list[str] = []
    coordinator = SqlCoordinator(sqlite_store)
    for job in ("claim_evaluation", "claim_refit"):
        real = getattr(coordinator, job)
        monkeypatch.setattr(
            coordinator, job, lambda *a, real=real, job=job: asked.append(job) or real(*a)
        )
    monkeypatch.setattr(automl.worker.loop, "POST_STUDY_CHECK_INTERVAL_S", 3600.0)

    assert Worker(None, _options(), coordinator=coordinator).run() == 6

    # Before the first claim; then none between the 6 trials; idle after the last one:
    # it finds the evaluation and runs it, asks again at once (nothing), and once more
    # before exiting. Asked before every claim, it would be 9.
    assert asked.count("claim_evaluation") == 4
    assert get_study(sqlite_store, study_id).status == StudyStatus.COMPLETED
    with sqlite_store.read() as connection:
        state = connection.scalar(sqlalchemy.select(tables.evaluations.c.state))
    assert state in ("done", "skipped")


def test_a_worker_whose_folders_cannot_be_written_refuses_to_start(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once found only by each trial on an image folder (or a gan), separately."""
    (tmp_path / "a-file").touch()
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(UnusableFolderError, match=r"cache folder .*\(AUTOML_CACHE_DIR\)"):
        Worker(sqlite_store, _options())

    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    assert isinstance(sqlite_store.artifacts, FolderArtifactStore)  # SQLite's default
    artifacts = sqlite_store.artifacts.directory
    real = tempfile.mkstemp

    def read_only(*args: Any, dir: Path, **kwargs: Any) -> tuple[int, str]:
        if Path(dir) == artifacts:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UnusableFolderError, match=r"artifacts folder .*\(AUTOML_ARTIFACTS_DIR\)"):
        Worker(sqlite_store, _options())
    assert (tmp_path / "cache").is_dir()  # the cache folder passed: created, written in


def test_a_diverged_trial_is_pruned_with_its_reason_not_failed(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    # Counted toward max_failed, a search over large learning rates failed as a study;
    # completed, NaN weights scored as class 0 and broke every model answer.
    diverging = {"epochs": 2, "lr": 10.0, "weight_decay": 1.0, "optimizer": "sgd", "momentum": 0.0}
    spec = tiny_spec(budget={"n_trials": 2, "max_failed": 0}, fixed=diverging, params={})
    study_id = submit_study(sqlite_store, spec).id
    assert Worker(sqlite_store, _options()).run() == 2

    trials = sqlite_store.storage.get_all_trials(study_id)
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert all(
        t.user_attrs[attrs.ERROR].startswith("TrainingDiverged: training diverged at epoch ")
        for t in trials
    )
    assert attrs.WEIGHTS not in trials[0].user_attrs
    assert get_study(sqlite_store, study_id).status == StudyStatus.COMPLETED


def test_a_worker_forgets_only_the_study_it_served_least_recently(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forgetting every study at once made the worker read each big study again."""
    monkeypatch.setattr(automl.worker.loop, "CACHED_STUDIES", 2)
    monkeypatch.setattr(automl.store.study_caches, "CACHED_STUDIES", 2)
    ids = [
        submit_study(store, tiny_spec(name=f"s{n}", budget={"n_trials": 2})).id for n in range(3)
    ]
    worker = Worker(store, _options())
    coordinator = worker.coordinator
    assert isinstance(coordinator, BufferedSqlCoordinator)
    caches = coordinator.trials
    assert isinstance(caches, StudyCaches)
    cached: list[list[int]] = []
    kept: dict[int, weakref.ref[Any]] = {}

    def seen(study_id: int, trial: FrozenTrial, outcome: str) -> None:
        cached.append(caches.cached_studies())
        cache = caches.cached(study_id)
        assert cache is not None
        kept.setdefault(study_id, weakref.ref(cache))
        assert list(worker._studies)[-1] == study_id and len(worker._studies) <= 2

    worker.on_trial_end = seen
    assert worker.run() == 6

    first, second, third = ids
    assert cached == [[first]] * 2 + [[first, second]] * 2 + [[second, third]] * 2
    gc.collect()
    assert kept[first]() is None  # nothing holds its finished trials
    assert kept[second]() is caches.cached(second)  # the same cache, not read again
    assert list(worker._studies) == [second, third]
    for study_id in ids:
        assert _states(store, study_id) == [TrialState.COMPLETE] * 2
        assert get_status(store, study_id) == StudyStatus.COMPLETED


def test_a_storage_internal_error_s_description_names_the_error_it_wraps() -> None:
    """Optuna's own message ("An exception is raised during the commit") does not say why."""
    from optuna.exceptions import StorageInternalError

    from automl.worker.runner import _describe

    try:
        try:
            raise ValueError("value too long for type character varying(2048)")
        except ValueError as cause:
            raise StorageInternalError("An exception is raised during the commit.") from cause
    except StorageInternalError as exc:
        described = _describe(exc)
    assert described.startswith("StorageInternalError: An exception is raised during the commit.")
    assert described.endswith(
        "(cause: ValueError: value too long for type character varying(2048))"
    )


def test_a_failure_names_the_module_it_was_raised_in() -> None:
    """Found by a plugin author: ``(at losses.py:19)`` named a file of the plugin's that
    automl has too."""
    from automl.worker.runner import _describe

    def raise_it() -> None:
        raise ZeroDivisionError("plugin loss exploded")

    try:
        raise_it()
    except ZeroDivisionError as exc:
        described = _describe(exc)
    line = raise_it.__code__.co_firstlineno + 1
    assert described == f"ZeroDivisionError: plugin loss exploded (at {__name__}:{line})"


def test_an_idle_worker_says_once_that_it_waits(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a tester: a worker started before anything was submitted (or in another
    folder than the submit) only said it had started, and then nothing."""
    worker = Worker(sqlite_store, _options(exit_when_idle=False, poll_interval=0.05))
    stopper = threading.Timer(0.5, worker.stop)
    stopper.start()
    with caplog.at_level(logging.INFO, logger="automl.worker"):
        assert worker.run() == 0
    stopper.join()

    told = [r.getMessage() for r in caplog.records if "nothing to run" in r.getMessage()]
    assert len(told) == 1 and "waiting for trials (a look every 0.05s)" in told[0]
