"""Claims and leases: exact budgets under concurrency, compare-and-set on every change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import (
    FailureKind,
    Lease,
    LeaseLostError,
    Store,
    StudyStatus,
    attrs,
    cancel_study,
    claim,
    enqueue_trials,
    finish,
    finish_and_settle,
    get_study,
    heartbeat,
    optuna_rows,
    record_checkpoint,
    record_params,
    record_results,
    release,
    running_trial_template,
    submit_study,
    tables,
)
from automl.store.faults import is_transient
from automl.store.leases import end_if_done
from tests.conftest import store_at
from tests.store.conftest import start_trial

SpecFactory = Callable[..., StudySpec]


def test_claims_take_the_oldest_active_study_first(store: Store, tiny_spec: SpecFactory) -> None:
    first = submit_study(store, tiny_spec(name="a", budget={"n_trials": 1})).id
    second = submit_study(store, tiny_spec(name="b", budget={"n_trials": 2})).id
    cancelled = submit_study(store, tiny_spec(name="c", budget={"n_trials": 2})).id
    cancel_study(store, cancelled)

    claimed = [claim(store, "w") for _ in range(4)]

    assert [lease.study_id if lease else None for lease in claimed] == [first, second, second, None]
    assert [lease.attempt for lease in claimed if lease] == [1, 1, 1]
    assert get_study(store, second).status == StudyStatus.RUNNING
    assert claim(store, "w", study_id=first) is None


def test_projects_share_the_workers_and_each_runs_its_studies_in_order(
    store: Store, tiny_spec: SpecFactory
) -> None:
    # Found by a security tester: one project's study of 100,000 trials held every worker,
    # and another project's study stayed queued until it was cancelled.
    hog = submit_study(store, tiny_spec(name="hog", budget={"n_trials": 50}), project="a").id
    later = submit_study(store, tiny_spec(name="later", budget={"n_trials": 50}), project="a").id
    other = submit_study(store, tiny_spec(name="b", budget={"n_trials": 2}), project="b").id

    claimed = [claim(store, f"w{index}") for index in range(6)]

    # b's single study gets every other worker while it has work; a's run in order.
    assert [lease.study_id if lease else None for lease in claimed] == [
        hog,
        other,
        hog,
        other,
        hog,
        hog,
    ]
    assert get_study(store, later).status == StudyStatus.QUEUED


def test_claims_skip_the_excluded_studies(store: Store, tiny_spec: SpecFactory) -> None:
    """A worker that cannot read a study's spec takes the next study's work instead."""
    first = submit_study(store, tiny_spec(name="a", budget={"n_trials": 1})).id
    second = submit_study(store, tiny_spec(name="b", budget={"n_trials": 1})).id

    lease = claim(store, "w", exclude={first})

    assert lease is not None and lease.study_id == second
    assert claim(store, "w", exclude={first}) is None
    assert claim(store, "w", study_id=first, exclude={first}) is None
    assert get_study(store, first).status == StudyStatus.QUEUED  # never claimed
    again = claim(store, "w")
    assert again is not None and again.study_id == first


def test_concurrent_claims_hand_out_each_unit_exactly_once(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    """Threads with stores of their own race for 12 fresh units and 6 enqueued configs."""
    setup = store_at(storage_url, tmp_path)
    study_id = submit_study(setup, tiny_spec(budget={"n_trials": 18})).id
    enqueue_trials(setup, study_id, [{"lr": 0.001 + i / 1000} for i in range(6)])
    n_threads = 4
    claimed: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock, start = threading.Lock(), threading.Barrier(n_threads)

    def claim_all(index: int) -> None:
        mine = store_at(storage_url, tmp_path)
        try:
            start.wait()
            for _ in range(19):  # bounded: a regression must fail, not spin
                lease = claim(mine, f"w{index}")
                if lease is None:
                    return
                with lock:
                    claimed.append((lease.ticket_id, lease.source))
        except BaseException as exc:
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert len(claimed) == 18
        assert len({ticket for ticket, _ in claimed}) == 18
        assert sorted(source for _, source in claimed).count("enqueued") == 6
        detail = get_study(setup, study_id)
        assert (detail.counts.running, detail.counts.waiting) == (18, 0)
    finally:
        setup.close()


def test_heartbeat_reports_a_lost_lease_and_an_ended_study(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec()).id
    lease = claim(store, "w")
    assert lease is not None
    status = heartbeat(store, lease)
    assert (status.held, status.study_active) == (True, True)

    cancel_study(store, study_id)
    status = heartbeat(store, lease)
    assert (status.held, status.study_active) == (True, False)

    stranger = type(lease)(**{**lease.__dict__, "worker_id": "someone-else"})
    assert heartbeat(store, stranger).held is False


@pytest.mark.parametrize("ended", [TrialState.COMPLETE, TrialState.FAIL])
def test_heartbeat_reports_a_trial_another_tool_ended(
    store: Store, tiny_spec: SpecFactory, ended: TrialState
) -> None:
    """Plain optuna-dashboard's "tell" ends a running trial of automl's: its worker's next
    beat learns it (the lease itself is still held)."""
    submit_study(store, tiny_spec(budget={"n_trials": 2}))
    lease, trial_id = start_trial(store)
    assert heartbeat(store, lease).trial_ended is False

    store.storage.set_trial_state_values(
        trial_id, ended, [0.99] if ended == TrialState.COMPLETE else None
    )
    status = heartbeat(store, lease)
    assert (status.held, status.study_active, status.trial_ended) == (True, True, True)


def test_heartbeat_of_a_retry_does_not_take_the_earlier_attempts_trial_for_its_own(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A retried ticket names the earlier attempt's (ended) trial until the new attempt
    links its own: that is no sign of another tool."""
    submit_study(store, tiny_spec(budget={"n_trials": 1}))
    lease, _ = start_trial(store)
    assert release(store, lease, FailureKind.INTERRUPTED, "stopping")
    again = claim(store, "other")
    assert again is not None and again.ticket_id == lease.ticket_id and again.attempt == 2
    with store.read() as connection:
        named = connection.scalar(
            sa.select(tables.tickets.c.trial_id).where(
                tables.tickets.c.ticket_id == again.ticket_id
            )
        )
        assert optuna_rows.trial_state(connection, named).is_finished()

    status = heartbeat(store, again)
    assert (status.held, status.trial_ended) == (True, False)


def test_changes_under_a_lost_lease_are_refused(store: Store, tiny_spec: SpecFactory) -> None:
    submit_study(store, tiny_spec())
    lease, _ = start_trial(store)
    assert release(store, lease, FailureKind.INTERRUPTED, "stopping")
    again = claim(store, "other")
    assert again is not None and again.ticket_id == lease.ticket_id and again.attempt == 2

    with pytest.raises(LeaseLostError):
        record_params(store, lease, {"lr": 0.01})
    with pytest.raises(LeaseLostError):
        record_checkpoint(store, lease, "ckpt", 1)
    with pytest.raises(LeaseLostError):
        finish(store, lease, "complete")
    assert release(store, lease, FailureKind.INTERRUPTED, "late") is False
    assert heartbeat(store, again).held


def test_work_joined_to_a_lease_call_shares_its_transaction(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec()).id

    def mark(value: str) -> Callable[[Any], None]:
        return lambda connection: optuna_rows.put_study_attrs(connection, study_id, {"k": value})

    def refuse(connection: Any) -> None:
        mark("refused")(connection)
        raise ValueError("refused for good")

    def beat_of(lease: Lease) -> Any:
        with store.read() as connection:
            query = sa.select(tables.tickets.c.heartbeat_at).where(
                tables.tickets.c.ticket_id == lease.ticket_id
            )
            return connection.scalar(query)

    lease, _ = start_trial(store)
    assert heartbeat(store, lease, then=mark("beat")).held
    before = beat_of(lease)
    time.sleep(0.01)
    with pytest.raises(ValueError, match="for good"):  # raised once the beat is in
        heartbeat(store, lease, then=refuse)
    assert beat_of(lease) > before
    assert store.storage.get_study_user_attrs(study_id)["k"] == "beat"  # refused: undone

    record_params(store, lease, {"lr": 0.01}, then=mark("params"))
    assert store.storage.get_study_user_attrs(study_id)["k"] == "params"
    assert release(store, lease, FailureKind.INTERRUPTED, "stopping")
    with pytest.raises(LeaseLostError):  # lost: nothing of it is written
        record_params(store, lease, {"lr": 0.02}, then=mark("lost"))
    assert not heartbeat(store, lease, then=mark("lost")).held
    assert store.storage.get_study_user_attrs(study_id)["k"] == "params"


def test_a_connection_lost_inside_joined_work_fails_the_whole_beat_as_transient(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """The joined work runs in a savepoint; when the connection itself dies there, no beat
    was stored either, and the error must stay one that the caller retries (not
    ``PendingRollbackError`` from committing on the dead connection)."""
    study_id = submit_study(store, tiny_spec()).id
    lease, _ = start_trial(store)

    def lose_connection(connection: Any) -> None:
        optuna_rows.put_study_attrs(connection, study_id, {"k": "lost"})
        if store.engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        connection.invalidate()
        raise sa.exc.OperationalError("SELECT 1", {}, ConnectionError("connection lost"))

    with pytest.raises(sa.exc.DBAPIError) as raised:
        heartbeat(store, lease, then=lose_connection)
    assert is_transient(raised.value)
    assert "k" not in store.storage.get_study_user_attrs(study_id)
    assert heartbeat(store, lease).held  # the store goes on with a fresh connection


def test_finish_is_safe_to_repeat(store: Store, tiny_spec: SpecFactory) -> None:
    submit_study(store, tiny_spec(budget={"n_trials": 1}))
    lease, _ = start_trial(store)
    record_checkpoint(store, lease, "ckpt-1", 1)
    assert finish(store, lease, "complete") == "ckpt-1"  # the caller deletes it
    assert finish(store, lease, "complete") is None  # a retry after a lost answer
    with pytest.raises(LeaseLostError):
        finish(store, lease, "pruned")


def test_a_claim_whose_answer_was_lost_is_taken_again_not_a_second_ticket(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by a tester: a claim committed while its answer was lost (a connection cut
    after COMMIT) left that ticket running unseen; the worker claimed another, and the
    reaper later failed the first unrun (7 of 20 trials at 15% lost answers)."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3})).id
    lost = claim(store, "worker-a", study_id, one_at_a_time=True)
    assert lost is not None
    with store.write() as connection:  # as if long ago: the reaper's next candidate
        connection.execute(
            tables.tickets.update()
            .where(tables.tickets.c.ticket_id == lost.ticket_id)
            .values(heartbeat_at=0.0)
        )

    again = claim(store, "worker-a", study_id, one_at_a_time=True)
    other = claim(store, "worker-b", study_id, one_at_a_time=True)

    assert again == lost
    assert other is not None and other.ticket_id != lost.ticket_id
    with store.read() as connection:
        beat = connection.scalar(
            sa.select(tables.tickets.c.heartbeat_at).where(
                tables.tickets.c.ticket_id == lost.ticket_id
            )
        )
        assert get_study(store, study_id).counts.running == 2
    assert beat > 0  # renewed: not the reaper's
    finish(store, again, "complete")
    fresh = claim(store, "worker-a", study_id, one_at_a_time=True)
    assert fresh is not None and fresh.ticket_id not in {lost.ticket_id, other.ticket_id}
    assert claim(store, "worker-a", study_id) != fresh  # a caller that holds several


def test_a_ticket_whose_attempt_started_a_trial_is_left_to_the_reaper(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by review: taken again, its second trial left the first RUNNING for good."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3})).id
    started, _ = start_trial(store, study_id, worker="worker-a")  # then the worker lost it

    again = claim(store, "worker-a", study_id, one_at_a_time=True)
    elsewhere = claim(store, "worker-a", study_id, one_at_a_time=True, exclude={study_id})
    # A second review: the started ticket hid a later claim whose answer was lost.
    retried = claim(store, "worker-a", study_id, one_at_a_time=True)

    assert again is not None and again.ticket_id != started.ticket_id
    assert elsewhere is None  # a ticket of a study it leaves is not taken either
    assert retried == again


def test_finish_and_settle_ends_the_ticket_and_the_study_in_one_call(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    first, first_trial = start_trial(store, study_id)
    second, second_trial = start_trial(store, study_id)
    record_checkpoint(store, first, "ckpt-1", 1)
    store.storage.set_trial_state_values(first_trial, TrialState.COMPLETE, [0.5])
    assert finish_and_settle(store, first, "complete") == ("ckpt-1", StudyStatus.RUNNING)
    assert finish_and_settle(store, first, "complete") == (None, StudyStatus.RUNNING)  # again

    release(store, second, FailureKind.INTERRUPTED, "stopping")
    with pytest.raises(LeaseLostError):  # lost: the study is not settled either
        finish_and_settle(store, second, "complete")
    assert get_study(store, study_id).status == StudyStatus.RUNNING
    again, trial_id = start_trial(store, study_id)
    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.6])
    assert finish_and_settle(store, again, "complete") == (None, StudyStatus.COMPLETED)
    assert get_study(store, study_id).status == StudyStatus.COMPLETED
    assert second_trial != trial_id


def test_record_checkpoint_returns_the_one_it_replaces(
    store: Store, tiny_spec: SpecFactory
) -> None:
    submit_study(store, tiny_spec())
    lease, _ = start_trial(store)
    assert record_checkpoint(store, lease, "ckpt-1", 1) is None
    assert record_checkpoint(store, lease, "ckpt-2", 2) == "ckpt-1"
    release(store, lease, FailureKind.INTERRUPTED, "stopping")
    again = claim(store, "w2")
    assert again is not None
    assert (again.checkpoint, again.checkpoint_epoch) == ("ckpt-2", 2)


def test_release_fails_the_attempt_and_requeues_without_using_a_retry(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 0})).id
    lease, trial_id = start_trial(store)
    record_params(store, lease, {"lr": 0.005, "optimizer": "adam"})

    assert release(store, lease, FailureKind.INTERRUPTED, "worker stopping")

    trial = store.storage.get_trial(trial_id)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[attrs.FAILURE] == "interrupted"
    assert trial.user_attrs[attrs.ERROR] == "worker stopping"
    assert get_study(store, study_id).counts.waiting == 1
    again = claim(store, "w2")
    assert again is not None
    assert (again.ticket_id, again.params) == (lease.ticket_id, {"lr": 0.005, "optimizer": "adam"})


def test_release_finds_an_unrecorded_trial_by_its_lease_key(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """A worker that created its trial but failed to record it still leaves nothing RUNNING."""
    submit_study(store, tiny_spec())
    lease, trial_id = start_trial(store)
    with store.write() as connection:
        connection.execute(
            tables.tickets.update()
            .where(tables.tickets.c.ticket_id == lease.ticket_id)
            .values(trial_id=None, trial_number=None)
        )
    assert release(store, lease, FailureKind.INTERRUPTED, "no trial recorded")
    assert store.storage.get_trial(trial_id).state == TrialState.FAIL


def test_release_without_requeue_ends_the_ticket_failed(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    lease, _ = start_trial(store)
    assert release(store, lease, FailureKind.ERROR, "sampler broke", requeue=False)
    counts = get_study(store, study_id).counts
    assert (counts.fail, counts.waiting) == (1, 0)


def test_release_after_cancel_keeps_the_ticket_for_resume(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    lease, _ = start_trial(store)
    cancel_study(store, study_id)
    assert release(store, lease, FailureKind.CANCELLED, "study ended")
    counts = get_study(store, study_id).counts
    # The released ticket, and the unit never handed out: both run on a resume.
    assert (counts.cancelled, counts.running, counts.waiting) == (2, 0, 0)


def test_results_are_recorded_in_one_write_only_while_the_trial_runs(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    lease, trial_id = start_trial(store, study_id)
    results = {attrs.METRICS: {"val_accuracy": 0.5}, attrs.CLASSES: ["a", "b"]}

    record_results(store, trial_id, results)

    user_attrs = store.storage.get_trial(trial_id).user_attrs
    assert {key: user_attrs[key] for key in results} == results
    assert user_attrs[attrs.LEASE] == lease.key  # the others stay

    store.storage.set_trial_state_values(trial_id, TrialState.FAIL)  # a reaper ended it
    with pytest.raises(UpdateFinishedTrialError):
        record_results(store, trial_id, {attrs.METRICS: {"val_accuracy": 0.9}})
    assert store.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == {"val_accuracy": 0.5}


def test_a_claim_that_waited_for_a_study_taken_dry_claims_from_the_next(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """On PostgreSQL a claim that waits for the oldest study's row lock re-checks that row
    alone: once the holder took its last work, the claim must look again and find the
    next study, not report that there is no work."""
    first = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    second = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    claimed: list[Lease | None] = []
    waiting = threading.Thread(target=lambda: claimed.append(claim(store, "w2")))
    with store.write() as connection:  # another claim, holding the first study's row
        connection.execute(
            sa.select(tables.studies).where(tables.studies.c.study_id == first).with_for_update()
        )
        connection.execute(
            tables.studies.update().where(tables.studies.c.study_id == first).values(issued=1)
        )
        waiting.start()
        time.sleep(0.5)  # the waiting claim blocks on the row (or on SQLite's write lock)
    waiting.join(timeout=30)
    [lease] = claimed
    assert lease is not None and lease.study_id == second


def test_a_release_finds_a_retried_attempts_trial_the_ticket_does_not_name_yet(
    store: Store, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 2})).id
    first, first_trial = start_trial(store, study_id)
    assert release(store, first, FailureKind.INTERRUPTED, "stopping")
    second = claim(store, "w2", study_id)
    assert second is not None and second.attempt == 2
    # Created, but not linked yet: the ticket still names the first attempt's trial.
    template = running_trial_template({attrs.LEASE: second.key})
    unlinked = store.storage.create_new_trial(study_id, template)
    assert release(store, second, FailureKind.INTERRUPTED, "stopping")
    states = {t._trial_id: t.state for t in store.storage.get_all_trials(study_id)}
    assert states == {first_trial: TrialState.FAIL, unlinked: TrialState.FAIL}


def test_a_trial_ending_while_its_study_is_deleted_finds_the_study_gone(
    store: Store, tiny_spec: SpecFactory
) -> None:
    """Found by the tester: workers logged "settling failed: 'deleting' is not a valid
    StudyStatus" (the settle's transaction failed) for a study being deleted."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    lease, _ = start_trial(store, study_id)
    cancel_study(store, study_id)
    with store.write() as connection:
        connection.execute(
            tables.studies.update()
            .where(tables.studies.c.study_id == study_id)
            .values(status=tables.DELETING)
        )

    assert finish_and_settle(store, lease, "complete") == (None, None)
    assert end_if_done(store, study_id) is None
