"""The reaper: stale tickets go back to the queue, live ones never do, several reapers agree."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

import automl.store.storage
import automl.store.studies as studies_module
from automl.spec import StudySpec
from automl.store import (
    FailureKind,
    Lease,
    LeaseLostError,
    Reaper,
    Store,
    StudyStatus,
    attrs,
    claim,
    end_due_studies,
    finish,
    get_study,
    heartbeat,
    reap_stale,
    record_params,
    submit_study,
    tables,
)
from automl.store.reaper import Sightings
from automl.store.status import lock_study
from tests.conftest import store_at
from tests.netproxy import TcpProxy
from tests.store.conftest import end_trial, sqlite_write_lock_held, start_trial

SpecFactory = Callable[..., StudySpec]


def _age_heartbeat(store: Store, ticket_id: int, seconds: float) -> None:
    """Makes a ticket's last heartbeat ``seconds`` old."""
    with store.write() as connection:
        connection.execute(
            tables.tickets.update()
            .where(tables.tickets.c.ticket_id == ticket_id)
            .values(heartbeat_at=tables.db_now() - seconds)
        )


def test_stale_ticket_is_requeued_with_its_params(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 1})).id
    lease, trial_id = start_trial(store)
    record_params(store, lease, {"lr": 0.004})
    _age_heartbeat(store, lease.ticket_id, 120)

    [reaped] = reap_stale(store, grace=60)

    assert (reaped.ticket_id, reaped.failed_trials, reaped.result) == (
        lease.ticket_id,
        (trial_id,),
        "requeued",
    )
    trial = store.storage.get_trial(trial_id)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[attrs.FAILURE] == "worker_lost"
    # 120 s, and the moments between the aging and the reap (121 under load: rounded).
    assert re.search(r"no heartbeat for 12[01] s", trial.user_attrs[attrs.ERROR])
    assert heartbeat(store, lease).held is False
    again = claim(store, "w2")
    assert again is not None
    assert (again.ticket_id, again.attempt, again.params) == (lease.ticket_id, 2, {"lr": 0.004})
    assert again.previous_trial == trial.number
    assert get_study(store, study_id).counts.running == 1


def test_with_sightings_a_ticket_is_reaped_once_its_beat_stayed_the_same_long_enough(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A beat the database held up may land one heartbeat interval after it failed: the
    ticket must look stale with the same beat for longer than that."""
    submit_study(store, tiny_spec(budget={"n_trials": 2}))
    lease, _ = start_trial(store)
    _age_heartbeat(store, lease.ticket_id, 120)
    sightings: Sightings = {}

    def reaped() -> list[int]:
        found = reap_stale(store, 60, sightings=sightings, confirm_after=0.4)
        return [r.ticket_id for r in found]

    assert reaped() == [] and list(sightings) == [(lease.ticket_id, lease.attempt)]
    assert reaped() == []  # the same beat, but not for long enough
    time.sleep(0.2)
    _age_heartbeat(store, lease.ticket_id, 100)  # a beat landed (an old one, to stay stale)
    time.sleep(0.25)
    assert reaped() == []  # a new beat: it starts over
    time.sleep(0.45)
    assert reaped() == [lease.ticket_id]
    assert reaped() == [] and sightings == {}  # no longer stale: no longer sighted


def test_live_ticket_is_never_reaped(store: Store, tiny_spec: SpecFactory) -> None:
    submit_study(store, tiny_spec())
    lease, trial_id = start_trial(store)
    _age_heartbeat(store, lease.ticket_id, 30)
    assert reap_stale(store, grace=60) == []
    assert heartbeat(store, lease).held
    assert store.storage.get_trial(trial_id).state == TrialState.RUNNING


def test_retries_run_out_then_the_ticket_fails(store: Store, tiny_spec: SpecFactory) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 1})).id
    results = []
    for _ in range(2):
        lease, _ = start_trial(store)
        _age_heartbeat(store, lease.ticket_id, 120)
        results += [reaped.result for reaped in reap_stale(store, grace=60)]
    assert results == ["requeued", "exhausted"]
    detail = get_study(store, study_id)
    assert (detail.counts.fail, detail.counts.waiting) == (1, 0)
    # The reaper settles the study: nothing came of it (once "completed").
    assert detail.status == StudyStatus.FAILED
    assert detail.status_reason == "all trials finished, none with a result"
    trials = store.storage.get_all_trials(study_id)
    assert [t.user_attrs[attrs.FAILURE] for t in trials] == ["worker_lost", "worker_lost"]


def test_result_told_before_the_worker_died_counts(store: Store, tiny_spec: SpecFactory) -> None:
    """Worker told Optuna, then died before ending its ticket: the ticket takes that result."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = start_trial(store)
    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.8])
    _age_heartbeat(store, lease.ticket_id, 120)

    [reaped] = reap_stale(store, grace=60)

    assert (reaped.result, reaped.failed_trials) == ("finished", ())
    assert store.storage.get_trial(trial_id).state == TrialState.COMPLETE
    detail = get_study(store, study_id)
    assert (detail.counts.complete, detail.status) == (1, StudyStatus.COMPLETED)


def test_a_retry_reaped_before_its_trial_is_not_taken_for_the_earlier_attempt(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """The ticket still names attempt 1's (failed) trial while attempt 2 has none: the
    reaper must requeue attempt 2 with a retry, not end the ticket with attempt 1's end."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 3})).id
    first, _ = start_trial(store)
    _age_heartbeat(store, first.ticket_id, 120)
    assert [r.result for r in reap_stale(store, grace=60)] == ["requeued"]
    second = claim(store, "w2")
    assert second is not None and second.attempt == 2
    _age_heartbeat(store, second.ticket_id, 120)
    assert [r.result for r in reap_stale(store, grace=60)] == ["requeued"]
    with store.read() as connection:
        state, retries = connection.execute(
            sa.select(tables.tickets.c.state, tables.tickets.c.retries)
        ).one()
    assert (state, retries) == ("pending", 2)
    assert get_study(store, study_id).status.is_active


def test_a_trial_its_worker_gave_back_is_requeued_without_a_retry(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Told FAIL as interrupted, then the worker died before giving the ticket back."""
    submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 0}))
    lease, trial_id = start_trial(store)
    store.storage.set_trial_user_attr(trial_id, attrs.FAILURE, FailureKind.INTERRUPTED.value)
    store.storage.set_trial_state_values(trial_id, TrialState.FAIL)
    _age_heartbeat(store, lease.ticket_id, 120)
    assert [r.result for r in reap_stale(store, grace=60)] == ["requeued"]
    again = claim(store, "w2")
    assert again is not None and again.attempt == 2  # max_retries 0: no retry was used


def test_reaped_attempt_rejects_the_late_result(store: Store, tiny_spec: SpecFactory) -> None:
    submit_study(store, tiny_spec(budget={"n_trials": 1}))
    lease, trial_id = start_trial(store)
    _age_heartbeat(store, lease.ticket_id, 120)
    reap_stale(store, grace=60)

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.9])
    with pytest.raises(LeaseLostError):
        finish(store, lease, "complete")
    assert store.storage.get_trial(trial_id).state == TrialState.FAIL


def test_concurrent_reapers_take_each_ticket_once(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    setup = store_at(storage_url, tmp_path)
    submit_study(setup, tiny_spec(budget={"n_trials": 6, "max_retries": 5}))
    leases = [start_trial(setup, worker=f"w{i}")[0] for i in range(6)]
    for lease in leases:
        _age_heartbeat(setup, lease.ticket_id, 120)
    results: list[list[int]] = []
    start = threading.Barrier(3)

    def reap() -> None:
        mine = store_at(storage_url, tmp_path)
        try:
            start.wait()
            results.append([reaped.ticket_id for reaped in reap_stale(mine, grace=60)])
        finally:
            mine.close()

    threads = [threading.Thread(target=reap) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        reaped = sorted(ticket for batch in results for ticket in batch)
        assert reaped == sorted(lease.ticket_id for lease in leases)
        with setup.read() as connection:
            retries = connection.scalars(sa.select(tables.tickets.c.retries)).all()
        assert retries == [1] * 6  # each reaped once, not once per reaper
    finally:
        setup.close()


def test_the_log_names_reaped_trials_by_number(
    store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the log named Optuna's trial ids, which `automl trials` never shows."""
    first = submit_study(store, tiny_spec(name="first")).id
    start_trial(store, first)
    second = submit_study(store, tiny_spec(name="second")).id
    lease, trial_id = start_trial(store, second)
    _age_heartbeat(store, lease.ticket_id, 120)
    caplog.set_level(logging.WARNING, logger="automl.reaper")

    [reaped] = reap_stale(store, grace=60, spare="worker-b")

    assert reaped.failed_trials == (trial_id,) and trial_id != 0
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reaped")]
    assert line.startswith(f"reaped trial(s) [0] of study {second} (ticket {lease.ticket_id}")


def _half_created(store: Store, name: str) -> None:
    """An Optuna study a submit created an hour ago and then died (no automl row)."""
    study = optuna.create_study(storage=store.storage, study_name=name)
    study.set_user_attr(attrs.CREATED_AT, (datetime.now(UTC) - timedelta(hours=1)).isoformat())


def _study_names(store: Store) -> set[str]:
    return {study.study_name for study in store.storage.get_all_studies()}


def test_reaper_looks_for_orphans_on_its_first_pass_then_every_few_minutes(
    store: Store,
) -> None:
    """Finding half-created studies reads every study's attributes: not on every pass of
    every worker's and the API's reaper."""
    reaper = Reaper(store, grace=60, interval=3600)
    _half_created(store, "first")
    reaper.run_once()
    assert _study_names(store) == set()

    _half_created(store, "second")
    reaper.run_once()
    assert _study_names(store) == {"second"}

    reaper._orphans_due = time.monotonic()  # ORPHAN_SWEEP_INTERVAL_S later
    reaper.run_once()
    assert _study_names(store) == set()


def test_every_pass_completes_a_deletion_that_a_crash_interrupted(
    store: Store, tiny_spec: SpecFactory
) -> None:
    reaper = Reaper(store, grace=60, interval=3600)
    reaper.run_once()  # the first pass, which also sweeps half-created studies
    study_id = submit_study(store, tiny_spec(name="dying")).id
    with store.write() as connection:  # as a DELETE request that died midway leaves it
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=tables.DELETING)
        )

    reaper.run_once()

    assert _study_names(store) == set()
    with store.read() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(tables.studies)) == 0


def test_a_deletion_that_keeps_failing_holds_up_neither_other_deletions_nor_reaping(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once each pass ended at a study whose artifacts could not be removed (a folder
    without permission, an S3 refusal), and the reaping waited for a healthy pass."""
    stuck, other = (submit_study(store, tiny_spec(name=n)).id for n in ("stuck", "other"))
    with store.write() as connection:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id.in_([stuck, other]))
            .values(status=tables.DELETING)
        )
    live = submit_study(store, tiny_spec(name="live")).id
    lease, _ = start_trial(store, live)
    _age_heartbeat(store, lease.ticket_id, 120)
    finish_deletion = studies_module.finish_deletion

    def refused_for_one(store: Store, study_id: int) -> bool:
        if study_id == stuck:
            raise PermissionError(13, "Permission denied", "automl-artifacts/x")
        return finish_deletion(store, study_id)

    monkeypatch.setattr(studies_module, "finish_deletion", refused_for_one)
    reaper = Reaper(store, grace=0.5, interval=3600)

    reaper.run_once()
    time.sleep(0.5)  # a grace period of passes before reaping
    assert reaper.run_once() == []  # the first pass that finds it stale
    time.sleep(reaper.max_stall)  # the beat it saw stays the last for that long
    reaped = reaper.run_once()

    assert [r.ticket_id for r in reaped] == [lease.ticket_id]
    with store.read() as connection:
        left = connection.scalars(sa.select(tables.studies.c.study_id)).all()
    assert sorted(left) == [stuck, live]


def test_reaper_waits_a_grace_period_after_gaining_the_database(
    store: Store, tiny_spec: SpecFactory
) -> None:
    submit_study(store, tiny_spec())
    lease, _ = start_trial(store)
    _age_heartbeat(store, lease.ticket_id, 120)
    reaper = Reaper(store, grace=0.5, interval=3600)
    reaper.start()
    try:
        assert reaper.run_once() == []  # it has not seen the database for a grace period
        time.sleep(0.6)
        assert reaper.run_once() == []  # found stale: reaped if still so max_stall later
        time.sleep(reaper.max_stall)
        assert [reaped.ticket_id for reaped in reaper.run_once()] == [lease.ticket_id]
    finally:
        reaper.stop()


def test_settle_due_ends_timed_out_and_finished_studies(
    store: Store, tiny_spec: SpecFactory
) -> None:
    timed = submit_study(store, tiny_spec(name="t", budget={"n_trials": 3, "timeout": 60})).id
    lease, trial_id = start_trial(store, timed)
    end_trial(store, lease, trial_id, 0.5)
    with store.write() as connection:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == timed)
            .values(deadline=tables.db_now() - 1)
        )
    done = submit_study(store, tiny_spec(name="d", budget={"n_trials": 1})).id
    lease, trial_id = start_trial(store, done)
    store.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
    finish(store, lease, "pruned")  # a worker that died before settling
    untouched = submit_study(store, tiny_spec(name="u")).id

    assert sorted(end_due_studies(store)) == [timed, done]
    assert get_study(store, timed).status_reason == "timeout reached"
    assert get_study(store, done).status == StudyStatus.COMPLETED
    assert get_study(store, untouched).status == StudyStatus.QUEUED


def test_a_frozen_writer_holding_the_study_lock_does_not_stall_the_reaper(
    postgres_url: str, tmp_path: Path, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker frozen mid-transaction (SIGSTOP, a paused VM) keeps its session open and
    # idle; the server ends it after the timeout, which frees the study's row lock.
    monkeypatch.setattr(automl.store.storage, "PG_IDLE_TRANSACTION_TIMEOUT_S", 1.0)
    store = store_at(postgres_url, tmp_path)
    try:
        study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 1})).id
        lease, _ = start_trial(store)
        _age_heartbeat(store, lease.ticket_id, 120)
        locked, frozen_error = threading.Event(), []

        def frozen_writer() -> None:
            try:
                with store.write() as connection:
                    lock_study(connection, study_id)
                    locked.set()
                    time.sleep(6)
            except sa.exc.DBAPIError as exc:
                frozen_error.append(exc)

        holder = threading.Thread(target=frozen_writer)
        holder.start()
        assert locked.wait(10)
        started = time.monotonic()
        [reaped] = reap_stale(store, grace=60)
        waited = time.monotonic() - started
        holder.join()

        assert reaped.result == "requeued"
        assert waited < 5, f"the reaper waited {waited:.1f} s for the frozen writer's lock"
        assert frozen_error, "the frozen writer's transaction should have been ended"
    finally:
        store.close()


def test_a_reaper_spares_the_tickets_of_its_busy_worker(
    store: Store, tiny_spec: SpecFactory
) -> None:
    # A worker's reaper and heartbeat wait on the same database: when a long SQLite lock
    # delays the beat past the grace period, the reaper must not take its own live trial.
    submit_study(store, tiny_spec(budget={"n_trials": 2}))
    mine, _ = start_trial(store, worker="w1")
    other, _ = start_trial(store, worker="w2")
    _age_heartbeat(store, mine.ticket_id, 120)
    _age_heartbeat(store, other.ticket_id, 120)

    assert [r.ticket_id for r in reap_stale(store, grace=60, spare="w1")] == [other.ticket_id]
    assert heartbeat(store, mine).held
    busy = True
    reaper = Reaper(store, grace=0.5, interval=3600, spare=lambda: "w1" if busy else None)
    reaper.start()
    try:
        time.sleep(0.5)  # its first grace period
        assert reaper.run_once() == []
        busy = False  # idle: a ticket it left behind is taken back
        assert reaper.run_once() == []  # by a pass that finds it stale max_stall later
        time.sleep(reaper.max_stall)
        assert [r.ticket_id for r in reaper.run_once()] == [mine.ticket_id]
    finally:
        reaper.stop()


def _beat_for(store: Store, lease: Lease, seconds: float) -> None:
    """Beats every quarter second for ``seconds``, as a live worker does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert heartbeat(store, lease).held
        time.sleep(0.25)


def _stalled_database_hides_no_live_worker(
    store: Store,
    reapers_store: Store,
    stall: Callable[[], AbstractContextManager[object]],
    tiny_spec: SpecFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reaper pass that ``stall`` holds up for longer than the grace period, during
    which a live worker's beats (held up as well) are late, reaps nothing, nor does the
    next; a dead worker's trial is reaped after a grace period of normal passes."""
    grace = 2.0
    submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 1}))
    dead, _ = start_trial(store, worker="dead")
    live, _ = start_trial(store, worker="live")
    _age_heartbeat(store, dead.ticket_id, 120)
    reaper = Reaper(reapers_store, grace=grace, interval=3600)
    reaper.run_once()  # starts its first grace period
    time.sleep(grace)
    assert heartbeat(store, live).held  # its last beat before the stall
    caplog.set_level(logging.WARNING, logger="automl.reaper")
    passes: list[list[int]] = []

    def reaper_pass() -> None:
        passes.append([reaped.ticket_id for reaped in reaper.run_once()])

    with stall():
        held_up = threading.Thread(target=reaper_pass)
        held_up.start()
        time.sleep(grace + 0.5)
    held_up.join(timeout=60)
    reaper_pass()  # at once: the live worker's own beat may still be on its way

    assert passes == [[], []]
    assert "did not answer for" in caplog.text
    assert heartbeat(store, live).held
    _beat_for(store, live, grace)
    assert reaper.run_once() == []  # the first pass that finds it stale
    time.sleep(reaper.max_stall)  # the beat it saw stays the last for that long
    assert [reaped.ticket_id for reaped in reaper.run_once()] == [dead.ticket_id]
    assert heartbeat(store, live).held


def test_passes_during_a_long_write_lock_do_not_count_as_healthy(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an outage tester: on SQLite a writer blocks only writers, so passes that
    only read went on while a long write held the workers' beats back; the first pass once
    it ended reaped a live worker's trial."""
    store, grace = sqlite_store, 1.0
    submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 1}))
    live, _ = start_trial(store, worker="live")
    reaper = Reaper(store, grace=grace, interval=3600)  # not started: as after an outage
    passes: list[list[int]] = []

    def reaper_pass() -> None:
        passes.append([reaped.ticket_id for reaped in reaper.run_once()])

    caplog.set_level(logging.WARNING, logger="automl.reaper")
    with sqlite_write_lock_held(store):
        during = threading.Thread(target=reaper_pass)
        during.start()
        time.sleep(2 * grace + 0.5)  # the live worker's beats wait too
    during.join(timeout=60)
    reaper_pass()  # at once: the live worker's own beat may still be on its way

    assert passes == [[], []]
    assert "did not answer for" in caplog.text
    assert heartbeat(store, live).held


def test_a_pass_that_finds_a_long_write_lock_only_near_its_end_reaps_no_live_worker(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by an outage tester: a pass that started late in a write lock longer than the
    grace period waited less than its limit, then found the live worker's beat (held up
    since the lock began) older than the grace period and took its trial."""
    store, grace = sqlite_store, 2.0
    submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 1}))
    reaper = Reaper(store, grace=grace, interval=3600)
    reaper.run_once()  # starts its grace period
    time.sleep(grace)
    live, _ = start_trial(store, worker="live")
    passes: list[list[int]] = []

    def reaper_pass() -> None:
        passes.append([reaped.ticket_id for reaped in reaper.run_once()])

    with sqlite_write_lock_held(store):
        time.sleep(grace)  # the live worker's next beat waits for the lock
        late = threading.Thread(target=reaper_pass)
        late.start()
        time.sleep(reaper.max_stall / 2)  # the pass waits for less than its limit
    late.join(timeout=60)
    assert heartbeat(store, live).held  # the beat that waited lands
    reaper_pass()

    assert passes == [[], []]
    assert heartbeat(store, live).held


def test_a_reaper_held_up_by_a_silent_network_cut_reaps_no_live_worker(
    postgres_url: str, tmp_path: Path, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by exploratory testing: a cut that kept the sockets open held the reaper's
    query, with no error, until the network healed; the query then ran at once and took
    a live worker's trial, whose beats the same cut had held up."""
    server = sa.engine.make_url(postgres_url)
    with TcpProxy(server.host or "127.0.0.1", server.port or 5432) as proxy:
        workers = store_at(postgres_url, tmp_path)
        reapers = store_at(proxy.url_for(postgres_url), tmp_path)
        try:
            _stalled_database_hides_no_live_worker(
                workers, reapers, proxy.stalled, tiny_spec, caplog
            )
        finally:
            reapers.close()
            workers.close()


def test_a_reaper_held_up_by_a_long_write_lock_reaps_no_live_worker(
    sqlite_store: Store, tiny_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _stalled_database_hides_no_live_worker(
        sqlite_store, sqlite_store, lambda: sqlite_write_lock_held(sqlite_store), tiny_spec, caplog
    )
