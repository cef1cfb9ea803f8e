"""Many real worker processes against one database, while things go wrong.

Workers are killed (``kill -9``), all at once, stopped (SIGSTOP) past the grace period,
cut off from PostgreSQL, or race for user-enqueued configurations. Small heartbeat and
grace settings keep each scenario to seconds.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import (
    Store,
    StudyStatus,
    attrs,
    enqueue_trials,
    get_study,
    reap_stale,
    submit_study,
)
from tests.conftest import free_port, store_at, wait_healthy
from tests.e2e.fleet import (
    FAST_LEASES,
    GRACE_S,
    HEARTBEAT_S,
    REAP_S,
    SMALL_TRAIN,
    STUDY_TIMEOUT_S,
    Fleet,
    check_intact,
    check_kept_weights,
    running_holders,
    wait_for,
    wait_for_end,
)
from tests.forked import ForkedProcess
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.slow

SpecFactory = Callable[..., StudySpec]

# --- (a) kill -9 ------------------------------------------------------------------------------


def test_kill_9_of_random_workers_loses_no_trial(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    epochs = 10
    store = store_at(storage_url, tmp_path)
    fleet = fleet_factory(storage_url)
    try:
        spec = tiny_spec(
            dataset=SMALL_TRAIN,
            budget={"n_trials": 24, "max_failed": 0, "max_retries": 10},
            fixed={"epochs": epochs, "width": 8, "depth": 1, "batch_size": 64},
        )
        study_id = submit_study(store, spec).id
        fleet.start(4)
        rng = random.Random(7)
        holders: dict[int, int] = {}
        killed: set[int] = set()

        def found() -> bool:
            # A killed worker's ticket stays "running" until it is reaped: skip its pid.
            holders.clear()
            holders.update(running_holders(store, study_id))
            for pid in killed:
                holders.pop(pid, None)
            return bool(holders)

        for _ in range(6):
            wait_for(found, "a trial past its first epoch", fleet.output, 120)
            victim = rng.choice(sorted(holders))
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            fleet.start(1)  # keep four workers
        wait_for_end(store, study_id, fleet)

        detail = get_study(store, study_id)
        assert detail.status == StudyStatus.COMPLETED, detail
        counts = detail.counts
        assert (counts.complete, counts.finished, counts.running, counts.waiting) == (24, 24, 0, 0)
        trials = store.storage.get_all_trials(study_id)
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        lost = [t for t in trials if t.state == TrialState.FAIL]
        assert len(complete) == 24
        assert len({t.user_attrs[attrs.TICKET] for t in complete}) == 24
        assert 1 <= len(lost) <= 6
        assert {t.user_attrs[attrs.FAILURE] for t in lost} == {"worker_lost"}
        for trial in complete:
            check_intact(store, trial, epochs)
        check_kept_weights(store, study_id)  # keep_weights: 3, under 4 racing workers
        # Retried tickets resumed from their checkpoints: the curve continues the lost one.
        by_ticket = {t.user_attrs[attrs.TICKET]: t for t in lost}
        resumed = [t for t in complete if t.user_attrs.get(attrs.RESUMED_FROM_EPOCH)]
        assert resumed, fleet.output()
        for trial in resumed:
            before = by_ticket.get(trial.user_attrs[attrs.TICKET])
            start = trial.user_attrs[attrs.RESUMED_FROM_EPOCH]
            if before is not None:
                # The lost attempt may have died after its checkpoint but before reporting
                # that epoch: compare the steps it did report.
                for step, value in before.intermediate_values.items():
                    if step <= start:
                        assert trial.intermediate_values[step] == value
    finally:
        store.close()


# --- (b) every worker killed: the API's reaper alone -------------------------------------------


def test_api_reaper_requeues_when_every_worker_died(
    sqlite_url: str, tiny_spec: SpecFactory, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    store = store_at(sqlite_url, tmp_path)
    port = free_port()
    env = {**os.environ, **FAST_LEASES}
    log = tmp_path / "serve.log"
    server = ForkedProcess(["serve", "--port", str(port), "--storage", sqlite_url], env, log)
    fleet = fleet_factory(sqlite_url)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, log.read_text)
        spec = tiny_spec(
            budget={"n_trials": 2, "max_failed": 0},
            fixed={"epochs": 300, "width": 8, "depth": 1, "batch_size": 128},
        )
        study_id = submit_study(store, spec).id
        fleet.start(2)
        wait_for(
            lambda: len(running_holders(store, study_id)) == 2,
            "two running trials",
            fleet.output,
            120,
        )
        for process in fleet.processes:
            process.kill()
        killed_at = datetime.now(UTC).replace(tzinfo=None)
        for process in fleet.processes:
            process.wait()

        def requeued() -> bool:
            counts = get_study(store, study_id).counts
            return (counts.waiting, counts.running) == (2, 0)

        wait_for(requeued, "the API to re-queue both trials", log.read_text, GRACE_S + REAP_S + 30)
        lost = store.storage.get_all_trials(study_id)
        assert [t.user_attrs[attrs.FAILURE] for t in lost] == ["worker_lost"] * 2
        for trial in lost:
            assert trial.datetime_complete is not None
            # Never before the grace period: a live worker beats at least that often.
            waited = trial.datetime_complete.astimezone(UTC).replace(tzinfo=None) - killed_at
            assert waited.total_seconds() >= GRACE_S - HEARTBEAT_S - 0.1
        assert "reaped trial(s)" in log.read_text()
        response = httpx.get(f"http://127.0.0.1:{port}/studies/{study_id}", timeout=10)
        assert response.json()["counts"]["waiting"] == 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        store.close()


# --- (c) racing for enqueued configurations ----------------------------------------------------


def test_eight_workers_run_each_enqueued_config_once(
    postgres_url: str, tiny_spec: SpecFactory, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    """PostgreSQL only: SQLite serializes every claim anyway (its claim race is covered in
    tests/store/test_leases.py on both backends, with threads)."""
    storage_url = postgres_url
    store = store_at(storage_url, tmp_path)

    # Eight workers on two cores: a grace period that no slow-but-alive worker exceeds.
    fleet = fleet_factory(storage_url, "--exit-when-idle", env={"AUTOML_GRACE_PERIOD": "60"})
    try:
        spec = tiny_spec(dataset=SMALL_TRAIN, budget={"n_trials": 24, "max_failed": 0})
        study_id = submit_study(store, spec).id
        configs = [{"optimizer": "adam", "lr": round(0.001 + i * 0.0003, 6)} for i in range(24)]
        enqueue_trials(store, study_id, configs)
        fleet.start(8)
        codes = [process.wait(timeout=STUDY_TIMEOUT_S) for process in fleet.processes]
        assert codes == [0] * 8, fleet.output()

        trials = store.storage.get_all_trials(study_id)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 24
        assert sorted(t.params["lr"] for t in trials) == sorted(c["lr"] for c in configs)
        detail = get_study(store, study_id)
        assert (detail.status, detail.counts.complete) == (StudyStatus.COMPLETED, 24)
    finally:
        store.close()


# --- (d) connections dropped and the database unreachable --------------------------------------


def test_workers_survive_dropped_connections_and_an_outage(
    postgres_url: str, tiny_spec: SpecFactory, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    server = sa.engine.make_url(postgres_url)
    store = store_at(postgres_url, tmp_path)
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with TcpProxy(server.host or "127.0.0.1", server.port or 5432) as proxy:
        fleet = fleet_factory(proxy.url_for(postgres_url))
        try:
            spec = tiny_spec(
                dataset=SMALL_TRAIN,
                budget={"n_trials": 8, "max_failed": 0},
                fixed={"epochs": 10, "width": 8, "depth": 1, "batch_size": 64},
            )
            study_id = submit_study(store, spec).id
            fleet.start(2)
            wait_for(
                lambda: bool(running_holders(store, study_id)), "a running trial", fleet.output, 120
            )

            with admin.connect() as connection:
                terminated = connection.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": server.database},
                ).scalar()
            assert terminated
            time.sleep(1)
            proxy.cut()  # unreachable for 5 s
            time.sleep(5)
            proxy.restore()

            wait_for_end(store, study_id, fleet)
            assert len(fleet.alive()) == 2, fleet.output()  # no worker exited
            detail = get_study(store, study_id)
            trials = store.storage.get_all_trials(study_id)
            failures = [
                (t.user_attrs.get(attrs.FAILURE), t.user_attrs.get(attrs.ERROR))
                for t in trials
                if t.state != TrialState.COMPLETE
            ]
            assert (detail.status, detail.counts.complete) == (StudyStatus.COMPLETED, 8), (
                failures,
                fleet.output(),
            )
            assert TrialState.RUNNING not in {t.state for t in trials}
            assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 8
            outage_lines = fleet.output().count("storage unavailable while")
            assert 1 <= outage_lines <= 12, fleet.output()  # once per interval, not per try
        finally:
            admin.dispose()
            store.close()


# --- (e) a stopped worker's stale result -------------------------------------------------------


def stop_outside_a_write(worker: ForkedProcess, store: Store) -> None:
    """SIGSTOPs ``worker`` at a moment it holds no SQLite write lock.

    A process frozen inside a write transaction (an epoch report, a heartbeat) keeps its
    locks until it runs again: SQLite's one write lock, or PostgreSQL's row locks, which
    the reaper then waits for. This test is about a worker frozen between writes, so a
    stop that lands inside one is undone and tried again.
    """
    for _ in range(50):
        worker.send_signal(signal.SIGSTOP)
        if store.engine.dialect.name != "sqlite":
            with store.engine.connect() as connection:
                open_transactions = connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
                ).scalar_one()
            if not open_transactions:
                return
            worker.send_signal(signal.SIGCONT)
            time.sleep(0.05)
            continue
        probe = sqlite3.connect(str(store.engine.url.database), timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # frozen mid-write: let it finish, stop it again
            worker.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the worker was inside a write at every try")


def test_a_worker_stopped_past_the_grace_period_is_refused(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    epochs = 20
    store = store_at(storage_url, tmp_path)
    fleet = fleet_factory(storage_url, "--exit-when-idle")
    try:
        spec = tiny_spec(
            dataset=SMALL_TRAIN,
            budget={"n_trials": 1, "max_failed": 0},
            fixed={"epochs": epochs, "width": 8, "depth": 1, "batch_size": 64},
        )
        study_id = submit_study(store, spec).id
        fleet.start(1)
        [worker] = fleet.processes
        wait_for(
            lambda: bool(running_holders(store, study_id)), "a running trial", fleet.output, 120
        )
        stop_outside_a_write(worker, store)
        try:
            time.sleep(GRACE_S + 0.5)
            [reaped] = reap_stale(store, GRACE_S)  # what the API's reaper would do
        finally:
            worker.send_signal(signal.SIGCONT)
        assert reaped.result == "requeued"
        assert worker.wait(timeout=STUDY_TIMEOUT_S) == 0, fleet.output()

        first, second = store.storage.get_all_trials(study_id)
        assert (first.state, first.user_attrs[attrs.FAILURE]) == (TrialState.FAIL, "worker_lost")
        assert len(first.intermediate_values) < epochs  # it stopped once it woke up
        check_intact(store, second, epochs)
        detail = get_study(store, study_id)
        assert (detail.status, detail.counts.complete, detail.counts.finished) == (
            StudyStatus.COMPLETED,
            1,
            1,
        )
        assert "reaped" in fleet.output()
    finally:
        store.close()
