"""The worker loop: in-process workers on both backends, then real worker processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import FrozenTrial, TrialState

import automl.worker.loop
import automl.worker.runner
from automl.spec import StudySpec
from automl.store import (
    NoBestTrialError,
    QueuedTrialStorage,
    StudyStatus,
    attrs,
    best_trials,
    cancel_study,
    create_storage,
    get_status,
    get_study,
    mark_running,
    open_weights,
    submit_study,
)
from automl.worker import Worker, WorkerOptions

SpecFactory = Callable[..., StudySpec]

LONG_TRIAL = {"epochs": 500, "width": 8, "depth": 1, "batch_size": 128}
"""A trial that trains for several seconds, long enough to be caught RUNNING."""


def _options(tmp_path: Path, **overrides: Any) -> WorkerOptions:
    options: dict[str, Any] = {
        "device": "cpu",
        "exit_when_idle": True,
        "artifacts_dir": tmp_path / "artifacts",
        "seed_offset": 0,
    }
    options.update(overrides)
    return WorkerOptions(**options)


def _trials(storage: QueuedTrialStorage, study_id: int) -> list[FrozenTrial]:
    return storage.get_all_trials(study_id)


def _states(storage: QueuedTrialStorage, study_id: int) -> list[TrialState]:
    return [trial.state for trial in _trials(storage, study_id)]


def _wait_for_running_trial(url: str, study_id: int, timeout_s: float = 90) -> bool:
    """Polls a storage of its own until a trial of the study is RUNNING."""
    watcher = create_storage(url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if watcher.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                return True
            time.sleep(0.05)
        return False
    finally:
        watcher.engine.dispose()


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


def test_worker_runs_study_to_completion(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 4, "max_failed": 0})).id
    ended: list[tuple[int, FrozenTrial]] = []
    worker = Worker(storage, _options(tmp_path), on_trial_end=lambda s, t: ended.append((s, t)))

    assert worker.run() == 4

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.COMPLETED
    assert detail.status_reason == "all trials finished"
    assert detail.started_at is not None and detail.finished_at is not None
    assert (detail.counts.complete, detail.counts.finished) == (4, 4)
    assert (detail.counts.waiting, detail.counts.running) == (0, 0)
    assert [(s, t.number, t.state) for s, t in ended] == [
        (study_id, n, TrialState.COMPLETE) for n in range(4)
    ]

    for trial in _trials(storage, study_id):
        user_attrs = trial.user_attrs
        metrics = user_attrs[attrs.METRICS]
        assert trial.values == [pytest.approx(metrics["accuracy"])]
        assert 0.0 <= metrics["accuracy"] <= 1.0
        config = user_attrs[attrs.CONFIG]
        model = config["model"]["options"]
        assert (config["epochs"], model["width"], model["depth"]) == (1, 8, 1)
        assert config["optimizer"]["name"] == trial.params["optimizer"]
        assert config["lr"] == pytest.approx(trial.params["lr"])
        [epoch] = user_attrs[attrs.HISTORY]
        assert epoch["epoch"] == 1
        assert epoch["accuracy"] == pytest.approx(metrics["accuracy"])
        assert trial.intermediate_values == {1: pytest.approx(metrics["accuracy"])}
        assert len(user_attrs[attrs.PER_CLASS]) == 10
        assert user_attrs[attrs.WORKER] == worker.name
        assert attrs.ERROR not in user_attrs
        with open_weights(trial, tmp_path / "artifacts") as reader:
            weights = torch.load(io.BytesIO(reader.read()), weights_only=True)
        assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())

    best = best_trials(storage, study_id).trials[0]
    assert best.values is not None
    assert best.values[0] == pytest.approx(detail.best_value)


def test_storage_error_while_claiming_is_retried(
    sqlite_storage: QueuedTrialStorage,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database hiccup while looking for work does not kill the worker."""
    study_id = submit_study(sqlite_storage, tiny_spec(budget={"n_trials": 2})).id
    real = automl.worker.loop.active_study_ids
    calls = {"n": 0}

    def flaky(storage: QueuedTrialStorage) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed"))
        return real(storage)

    monkeypatch.setattr(automl.worker.loop, "active_study_ids", flaky)
    worker = Worker(sqlite_storage, _options(tmp_path, poll_interval=0.01))

    assert worker.run() == 2
    assert calls["n"] > 1
    assert get_study(sqlite_storage, study_id).status == StudyStatus.COMPLETED


def test_conditional_param_only_when_parent_matches(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 8, "max_failed": 0})).id
    Worker(storage, _options(tmp_path)).run()

    trials = _trials(storage, study_id)
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    optimizers = {t.params["optimizer"] for t in trials}
    assert optimizers == {"adam", "sgd"}  # the seeded sampler tries both
    for trial in trials:
        sgd = trial.params["optimizer"] == "sgd"
        assert ("momentum" in trial.params) == sgd
        assert set(trial.params) == {"optimizer", "lr", *(["momentum"] if sgd else [])}
        if sgd:
            assert 0.5 <= trial.params["momentum"] <= 0.9
            config = trial.user_attrs[attrs.CONFIG]
            momentum = config["optimizer"]["options"]["momentum"]
            assert momentum == pytest.approx(trial.params["momentum"])


def test_failing_trials_fail_the_study_and_leave_the_rest_waiting(
    storage: QueuedTrialStorage,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_train(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(automl.worker.runner, "train", broken_train)
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 5, "max_failed": 1})).id

    assert Worker(storage, _options(tmp_path)).run() == 2

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason == "2 trials failed (max_failed is 1)"
    assert _states(storage, study_id) == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 3
    for trial in _trials(storage, study_id)[:2]:
        assert trial.user_attrs[attrs.ERROR].startswith("RuntimeError: boom")
        assert attrs.CONFIG in trial.user_attrs  # suggested before training failed
        assert attrs.WEIGHTS not in trial.user_attrs


def test_threshold_pruner_prunes_every_trial(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = tiny_spec(
        budget={"n_trials": 3, "max_failed": 0},
        pruner={"name": "threshold", "options": {"lower": 2.0}},  # accuracy is never >= 2
        fixed={"epochs": 3, "width": 8, "depth": 1, "batch_size": 128},
    )
    study_id = submit_study(storage, spec).id

    assert Worker(storage, _options(tmp_path)).run() == 3

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.COMPLETED
    assert (detail.counts.pruned, detail.counts.finished) == (3, 3)
    for trial in _trials(storage, study_id):
        assert trial.state == TrialState.PRUNED
        assert list(trial.intermediate_values) == [1]  # stopped after the first epoch
        assert len(trial.user_attrs[attrs.HISTORY]) == 1
        assert attrs.WEIGHTS not in trial.user_attrs
    with pytest.raises(NoBestTrialError):
        best_trials(storage, study_id)


def test_stop_from_on_trial_end_returns_after_that_trial(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec(budget={"n_trials": 4, "max_failed": 0})).id
    worker = Worker(storage, _options(tmp_path), on_trial_end=lambda s, t: worker.stop())

    assert worker.run() == 1

    assert worker.stopping
    assert _states(storage, study_id) == [TrialState.COMPLETE] + [TrialState.WAITING] * 3
    assert get_status(storage, study_id) == StudyStatus.RUNNING


def test_stop_before_run_claims_nothing(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    worker = Worker(storage, _options(tmp_path))
    worker.stop()
    assert worker.run() == 0
    assert _states(storage, study_id) == [TrialState.WAITING] * 3
    assert get_status(storage, study_id) == StudyStatus.QUEUED


def test_stop_from_thread_interrupts_the_running_trial(
    storage: QueuedTrialStorage,
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    in_background: Callable[[Callable[[], None]], threading.Thread],
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 2}, fixed=LONG_TRIAL)
    study_id = submit_study(storage, spec).id
    worker = Worker(storage, _options(tmp_path))
    seen_running: list[bool] = []

    def stop_when_running() -> None:
        seen_running.append(_wait_for_running_trial(storage_url, study_id))
        worker.stop()

    in_background(stop_when_running)
    started = time.monotonic()
    assert worker.run() == 1
    assert time.monotonic() - started < 60
    assert seen_running == [True]

    trials = _trials(storage, study_id)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 2
    assert trials[0].user_attrs[attrs.ERROR].startswith("interrupted: stopped during epoch")
    assert attrs.WEIGHTS not in trials[0].user_attrs
    assert get_status(storage, study_id) == StudyStatus.RUNNING  # another worker may go on


def test_stop_from_thread_wakes_an_idle_worker(
    storage: QueuedTrialStorage,
    tmp_path: Path,
    in_background: Callable[[Callable[[], None]], threading.Thread],
) -> None:
    worker = Worker(storage, _options(tmp_path, exit_when_idle=False, poll_interval=30.0))

    def stop_soon() -> None:
        time.sleep(0.3)
        worker.stop()

    in_background(stop_soon)
    started = time.monotonic()
    assert worker.run() == 0
    assert time.monotonic() - started < 10  # not a whole poll interval


def test_cancel_during_training_interrupts_the_trial(
    storage: QueuedTrialStorage,
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_background: Callable[[Callable[[], None]], threading.Thread],
) -> None:
    monkeypatch.setattr(automl.worker.runner, "STATUS_CHECK_INTERVAL_S", 0.0)
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0}, fixed=LONG_TRIAL)
    study_id = submit_study(storage, spec).id

    def cancel_when_running() -> None:
        if _wait_for_running_trial(storage_url, study_id):
            canceller = create_storage(storage_url)
            cancel_study(canceller, study_id)
            canceller.engine.dispose()

    in_background(cancel_when_running)
    assert Worker(storage, _options(tmp_path)).run() == 1

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.CANCELLED
    trials = _trials(storage, study_id)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 2
    assert trials[0].user_attrs[attrs.ERROR] == "interrupted: study became cancelled"


def test_cancelled_study_is_not_claimed(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    cancel_study(storage, study_id)
    assert Worker(storage, _options(tmp_path)).run() == 0
    assert _states(storage, study_id) == [TrialState.WAITING] * 3
    assert get_status(storage, study_id) == StudyStatus.CANCELLED


def test_trial_claimed_from_stale_listing_of_cancelled_study_ends_failed(
    storage: QueuedTrialStorage,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A study cancelled between listing and ``ask``: the claim ends visibly, untrained."""
    study_id = submit_study(storage, tiny_spec()).id
    cancel_study(storage, study_id)
    monkeypatch.setattr(automl.worker.loop, "active_study_ids", lambda _: [study_id])

    assert Worker(storage, _options(tmp_path)).run() == 0

    trials = _trials(storage, study_id)
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 2
    assert trials[0].user_attrs[attrs.ERROR] == "interrupted: study is no longer active"
    assert attrs.CONFIG not in trials[0].user_attrs
    assert get_status(storage, study_id) == StudyStatus.CANCELLED


def test_worker_claims_oldest_study_first(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    first = submit_study(storage, tiny_spec(name="first", budget={"n_trials": 2})).id
    second = submit_study(storage, tiny_spec(name="second", budget={"n_trials": 2})).id
    order: list[int] = []
    Worker(storage, _options(tmp_path), on_trial_end=lambda s, t: order.append(s)).run()
    assert order == [first, first, second, second]
    assert get_status(storage, first) == get_status(storage, second) == StudyStatus.COMPLETED


def test_worker_for_one_study_ignores_the_others(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    other = submit_study(storage, tiny_spec(name="other")).id
    mine = submit_study(storage, tiny_spec(name="mine", budget={"n_trials": 2})).id

    assert Worker(storage, _options(tmp_path, study_id=mine)).run() == 2

    assert get_status(storage, mine) == StudyStatus.COMPLETED
    assert _states(storage, mine) == [TrialState.COMPLETE] * 2
    assert get_status(storage, other) == StudyStatus.QUEUED
    assert _states(storage, other) == [TrialState.WAITING] * 3


@pytest.mark.timeout(120)
def test_worker_for_one_study_exits_when_it_ends_even_without_exit_when_idle(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    other = submit_study(storage, tiny_spec(name="other")).id
    mine = submit_study(storage, tiny_spec(name="mine", budget={"n_trials": 2})).id
    options = _options(tmp_path, study_id=mine, exit_when_idle=False, poll_interval=0.05)

    assert Worker(storage, options).run() == 2

    assert get_status(storage, mine) == StudyStatus.COMPLETED
    assert _states(storage, other) == [TrialState.WAITING] * 3


@pytest.mark.timeout(60)
def test_worker_for_an_ended_study_exits_at_once(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    study_id = submit_study(storage, tiny_spec()).id
    cancel_study(storage, study_id)
    options = _options(tmp_path, study_id=study_id, exit_when_idle=False, poll_interval=0.05)
    assert Worker(storage, options).run() == 0


def test_timeout_budget_ends_study_after_the_trial_in_progress(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = tiny_spec(budget={"n_trials": 5, "max_failed": 0, "timeout": 0.001})
    study_id = submit_study(storage, spec).id

    assert Worker(storage, _options(tmp_path)).run() == 1

    detail = get_study(storage, study_id)
    assert detail.status == StudyStatus.COMPLETED
    assert detail.status_reason == "timeout reached"
    assert (detail.counts.complete, detail.counts.waiting) == (1, 4)


def test_timed_out_study_is_settled_without_claiming(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0, "timeout": 60})
    study_id = submit_study(storage, spec).id
    mark_running(storage, study_id)
    started = datetime.now(UTC) - timedelta(minutes=5)
    storage.set_study_user_attr(study_id, attrs.STARTED_AT, started.isoformat())

    assert Worker(storage, _options(tmp_path)).run() == 0

    assert get_status(storage, study_id) == StudyStatus.COMPLETED
    assert _states(storage, study_id) == [TrialState.WAITING] * 3


# --- real worker processes ---------------------------------------------------------------------


def _start_worker(url: str, tmp_path: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "automl",
        "--log-level",
        "WARNING",
        "worker",
        "--storage",
        url,
        "--device",
        "cpu",
        "--artifacts-dir",
        str(tmp_path / "artifacts"),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("AUTOML_STORAGE", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_processes_racing_run_exactly_the_budget(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    storage = create_storage(storage_url)
    try:
        spec = tiny_spec(budget={"n_trials": 6, "max_failed": 6})
        study_id = submit_study(storage, spec).id
        workers = [
            _start_worker(storage_url, tmp_path, tmp_path / f"worker{i}.log", "--exit-when-idle")
            for i in range(3)
        ]
        try:
            codes = [process.wait(timeout=120) for process in workers]
        finally:
            for process in workers:
                _kill(process)
        logs = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(3))
        assert codes == [0, 0, 0], logs

        trials = storage.get_all_trials(study_id)
        assert sorted(t.number for t in trials) == list(range(6))
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        assert all(t.state in finished for t in trials), [t.state for t in trials]
        detail = get_study(storage, study_id)
        assert detail.counts.finished == 6
        assert detail.counts.waiting == detail.counts.running == 0
        assert detail.status == StudyStatus.COMPLETED
        assert all(attrs.WORKER in t.user_attrs for t in trials)
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_sigterm_stops_worker_gracefully(
    sqlite_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    storage = create_storage(sqlite_url)
    try:
        spec = tiny_spec(budget={"n_trials": 20, "max_failed": 20}, fixed=LONG_TRIAL)
        study_id = submit_study(storage, spec).id
        log = tmp_path / "worker.log"
        process = _start_worker(sqlite_url, tmp_path, log, "--poll-interval", "0.2")
        try:
            running = _wait_for_running_trial(sqlite_url, study_id)
            assert running, log.read_text()
            assert process.poll() is None, log.read_text()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
        finally:
            _kill(process)
        assert code == 0, log.read_text()
        assert "received SIGTERM: stopping" in log.read_text()

        trials = storage.get_all_trials(study_id)
        states = [t.state for t in trials]
        assert TrialState.RUNNING not in states
        interrupted = [t for t in trials if t.state == TrialState.FAIL]
        assert len(interrupted) == 1
        assert interrupted[0].user_attrs[attrs.ERROR].startswith("interrupted")
        assert states.count(TrialState.WAITING) >= 18
        assert get_status(storage, study_id) == StudyStatus.RUNNING
    finally:
        storage.engine.dispose()


def test_loaded_optuna_study_sees_worker_results(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    """What a worker writes is plain Optuna: optuna-dashboard and ``load_study`` read it."""
    detail = submit_study(storage, tiny_spec(budget={"n_trials": 2, "max_failed": 0}))
    Worker(storage, _options(tmp_path)).run()
    study = optuna.load_study(study_name=detail.name, storage=storage)
    assert len(study.trials) == 2
    assert study.best_trial.value == pytest.approx(get_study(storage, detail.id).best_value)
    assert study.user_attrs[attrs.STATUS] == "completed"


def test_multi_objective_study_records_every_objective(
    storage: QueuedTrialStorage, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = tiny_spec(
        objective=None,
        objectives=[{"metric": "accuracy"}, {"metric": "loss"}],
        pruner=None,
        budget={"n_trials": 3, "max_failed": 0},
    )
    study_id = submit_study(storage, spec).id

    assert Worker(storage, _options(tmp_path)).run() == 3

    assert get_status(storage, study_id) == StudyStatus.COMPLETED
    for trial in _trials(storage, study_id):
        assert trial.state == TrialState.COMPLETE
        metrics = trial.user_attrs[attrs.METRICS]
        assert trial.values == [
            pytest.approx(metrics["accuracy"]),
            pytest.approx(metrics["loss"]),
        ]
        assert trial.intermediate_values == {}  # nothing to prune on
    front = best_trials(storage, study_id).trials
    assert 1 <= len(front) <= 3
