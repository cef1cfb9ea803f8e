"""The worker's trial storage (``automl.store.trial_buffer``): local reads, batched
writes, and every refusal a trial's writes can meet, on the database directly
(``BufferedSqlCoordinator``) and through ``automl proxy`` (``RemoteCoordinator``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from automl.proxy import RemoteCallError, RemoteCoordinator
from automl.spec import StudySpec
from automl.store import (
    FailureKind,
    Lease,
    LeaseLostError,
    StorageUnavailableError,
    Store,
    StudyStatus,
    attrs,
    get_study,
    reap_stale,
    running_trial_template,
    submit_study,
    tables,
)
from automl.worker.coordinator import BufferedSqlCoordinator

SpecFactory = Callable[..., StudySpec]
Buffered = BufferedSqlCoordinator | RemoteCoordinator
LR = FloatDistribution(1e-4, 1e-1, log=True)


@pytest.fixture(params=["database", "proxy"])
def coordinator(request: pytest.FixtureRequest, store: Store) -> Buffered:
    """A worker's coordinator on the store: directly, or through a proxy (no reaper:
    tests reap explicitly)."""
    if request.param == "database":
        return BufferedSqlCoordinator(store)
    client: RemoteCoordinator = request.getfixturevalue("proxy")
    return client


def refusal(coordinator: Buffered) -> type[Exception]:
    """What a write refused for good raises: the proxy's error, or the database's own."""
    return RemoteCallError if isinstance(coordinator, RemoteCoordinator) else ValueError


def _start(coordinator: Buffered, study_id: int) -> tuple[Lease, int]:
    """Claims and creates the attempt's trial as the worker does."""
    lease = coordinator.claim("w1", study_id)
    assert lease is not None
    template = running_trial_template({attrs.LEASE: lease.key}, {"fixed_params": {"lr": 0.01}})
    return lease, coordinator.start_trial(lease, template)


def test_starting_a_trial_links_it_to_the_ticket_or_creates_nothing(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 2})).id
    lease, trial_id = _start(coordinator, study_id)
    with store.read() as connection:
        linked = connection.execute(
            sa.select(tables.tickets.c.trial_id, tables.tickets.c.trial_number).where(
                tables.tickets.c.ticket_id == lease.ticket_id
            )
        ).one()
    assert tuple(linked) == (trial_id, 0)

    lost = coordinator.claim("w2", study_id)
    assert lost is not None
    coordinator.release(lost, FailureKind.INTERRUPTED, "stopping")  # the lease is gone
    with pytest.raises(LeaseLostError):
        coordinator.start_trial(lost, running_trial_template({attrs.LEASE: lost.key}))
    assert [t.number for t in store.storage.get_all_trials(study_id)] == [0]  # no orphan


def test_a_running_trials_local_copy_is_not_changed_through_a_read(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    _, trial_id = _start(coordinator, study_id)
    storage = coordinator.storage
    storage.set_trial_user_attr(trial_id, "report", {"0": {"recall": [0.5, 1.0]}})
    storage.set_trial_intermediate_value(trial_id, 1, 0.5)

    read = storage.get_trial(trial_id)
    read.user_attrs["report"]["0"]["recall"].append(0.0)
    read.user_attrs["report"]["1"] = {}
    read.system_attrs.clear()
    read.intermediate_values[2] = 0.9
    read.params["lr"] = 1.0

    again = storage.get_trial(trial_id)
    assert again.user_attrs["report"] == {"0": {"recall": [0.5, 1.0]}}
    assert again.system_attrs["fixed_params"] == {"lr": 0.01}
    assert (again.intermediate_values, again.params) == ({1: 0.5}, {})
    assert (again.number, again.state, again.datetime_start) == (
        read.number,
        TrialState.RUNNING,
        read.datetime_start,
    )


def _reporting(store: Store, coordinator: Buffered, spec: StudySpec) -> tuple[int, Lease, int]:
    """Submits ``spec``, starts a trial through the coordinator and reports its first epoch (0.5),
    which the local copy buffers; returns the study, the lease and the trial."""
    study_id = submit_study(store, spec).id
    lease, trial_id = _start(coordinator, study_id)
    coordinator.storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    return study_id, lease, trial_id


def test_a_running_trial_is_read_locally_and_written_with_the_next_call(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(
        store, coordinator, tiny_spec(budget={"n_trials": 1, "max_failed": 0})
    )
    storage = coordinator.storage
    storage.set_trial_param(trial_id, "lr", 0.01, LR)
    storage.set_trial_user_attr(trial_id, "config", {"a": (1, 2)})
    storage.set_trial_system_attr(trial_id, "artifacts:x", {"id": "x"})

    local = storage.get_trial(trial_id)
    assert local.params == {"lr": 0.01} and local.user_attrs["config"] == {"a": [1, 2]}
    assert local.system_attrs["fixed_params"] == {"lr": 0.01}
    assert store.storage.get_trial(trial_id).params == {}  # not sent yet

    assert coordinator.heartbeat(lease).held  # carries them
    remote = store.storage.get_trial(trial_id)
    assert (remote.params, remote.intermediate_values) == ({"lr": 0.01}, {1: 0.5})
    assert remote.user_attrs["config"] == {"a": [1, 2]}
    assert remote.system_attrs["artifacts:x"] == {"id": "x"}

    storage.set_trial_user_attr(trial_id, "last", 1)
    assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])  # one call
    done = store.storage.get_trial(trial_id)
    assert (done.state, done.values, done.user_attrs["last"]) == (TrialState.COMPLETE, [0.5], 1)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id, "later", 1)

    assert coordinator.finish_and_settle(lease, "complete", None, retain=True)  # settled with it
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


def test_a_reaped_trial_refuses_the_buffered_writes(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(
        store, coordinator, tiny_spec(budget={"n_trials": 2, "max_retries": 2})
    )
    storage = coordinator.storage
    assert len(reap_stale(store, grace=-1.0)) == 1

    assert not coordinator.heartbeat(lease).held
    assert storage.get_trial(trial_id).state == TrialState.FAIL  # read from the coordinator again
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial_id, 2, 0.6)
    # Through the proxy, Optuna's own gRPC server refuses it (its trial cache never saw
    # the trial): not a write the runner sends, since it ends a reaped trial as rejected.
    refused = (
        UpdateFinishedTrialError if isinstance(coordinator, BufferedSqlCoordinator) else Exception
    )
    with pytest.raises(refused):
        storage.set_trial_param(trial_id, "lr", 0.01, LR)
    assert store.storage.get_trial(trial_id).intermediate_values == {}

    # Told before any heartbeat noticed: the tell is refused, and so are its writes.
    lease, second = _start(coordinator, study_id)
    storage.set_trial_user_attr(second, "late", True)
    assert len(reap_stale(store, grace=-1.0)) == 1
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_state_values(second, TrialState.COMPLETE, [0.9])
    reaped = storage.get_trial(second)
    assert reaped.state == TrialState.FAIL and "late" not in reaped.user_attrs
    with pytest.raises(LeaseLostError):
        coordinator.finish_and_settle(lease, "complete", None, retain=True)


def test_writes_wait_out_a_transient_fault_and_go_with_a_refusal(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(store, coordinator, tiny_spec(budget={"n_trials": 1}))
    storage = coordinator.storage

    with pytest.raises(StorageUnavailableError), storage.pending_writes(trial_id) as writes:
        assert writes
        raise StorageUnavailableError("coordinator down")
    # Kept: the study's trials are read after sending them.
    [trial] = storage.get_all_trials(study_id)
    assert trial.intermediate_values == {1: 0.5}

    storage.set_trial_intermediate_value(trial_id, 2, 0.6)
    with pytest.raises(RuntimeError), storage.pending_writes(trial_id) as writes:
        raise RuntimeError("refused")
    assert coordinator.heartbeat(lease).held
    assert store.storage.get_trial(trial_id).intermediate_values == {1: 0.5}  # dropped
    # ... but not silently: the trial's next step says so, as the database path would.
    with pytest.raises(RuntimeError, match="refused"):
        coordinator.record_params(lease, {"lr": 0.01})
    assert storage.set_trial_state_values(trial_id, TrialState.FAIL)


def test_a_heartbeat_refused_for_good_fails_the_trial_at_its_tell(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    lease, first = _start(coordinator, study_id)
    coordinator.storage.set_trial_param(first, "x", 1.0, FloatDistribution(0.0, 2.0))
    assert coordinator.storage.set_trial_state_values(first, TrialState.COMPLETE, [1.0])
    coordinator.finish_and_settle(lease, "complete", None, retain=False)

    lease, second = _start(coordinator, study_id)
    # Another kind of distribution under the same name: the coordinator refuses it for good.
    coordinator.storage.set_trial_param(second, "x", 1, IntDistribution(0, 2))
    with pytest.raises(refusal(coordinator)):  # the keeper logs it and goes on
        coordinator.heartbeat(lease)
    with pytest.raises(refusal(coordinator), match=r"[Dd]istribution"):
        coordinator.storage.set_trial_state_values(second, TrialState.COMPLETE, [1.0])
    assert store.storage.get_trial(second).state == TrialState.RUNNING  # not completed


def test_a_release_keeps_the_buffered_reports(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    _study_id, lease, trial_id = _reporting(store, coordinator, tiny_spec(budget={"n_trials": 1}))
    # What SIGTERM does: the attempt ends, its ticket goes back to the queue.
    assert coordinator.release(lease, FailureKind.INTERRUPTED, "worker stopping")
    released = store.storage.get_trial(trial_id)
    assert released.state.is_finished() and released.intermediate_values == {1: 0.5}
    assert trial_id not in coordinator.storage._running and not coordinator.storage._pending


def test_a_write_made_during_a_failed_call_wins_over_the_restored_one(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = _start(coordinator, study_id)
    storage = coordinator.storage
    storage.set_trial_user_attr(trial_id, "k", "old")
    storage.set_trial_intermediate_value(trial_id, 1, 0.1)
    with pytest.raises(StorageUnavailableError), storage.pending_writes(trial_id) as writes:
        assert writes
        storage.set_trial_user_attr(trial_id, "k", "new")  # made while the call is in flight
        raise StorageUnavailableError("coordinator down")
    assert coordinator.heartbeat(lease).held
    remote = store.storage.get_trial(trial_id)
    assert remote.user_attrs["k"] == "new" and remote.intermediate_values == {1: 0.1}


def test_a_read_waits_for_the_writes_of_a_heartbeat_in_flight(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id, _lease, trial_id = _reporting(store, coordinator, tiny_spec(budget={"n_trials": 1}))
    storage = coordinator.storage
    read: list[list[FrozenTrial]] = []
    with storage.pending_writes(trial_id) as writes:  # a heartbeat took them
        reader = threading.Thread(target=lambda: read.append(storage.get_all_trials(study_id)))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive()  # waits for the call in flight
        storage._call("write_trial", {"writes": writes})
    reader.join(timeout=30)
    [[trial]] = read
    assert trial.intermediate_values == {1: 0.5}


def test_a_lost_tell_reply_is_recognised_on_retry(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory, monkeypatch: Any
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _lease, trial_id = _start(coordinator, study_id)
    storage = coordinator.storage
    storage.set_trial_user_attr(trial_id, "k", 1)
    real = storage._call
    lost = []

    def losing(method: str, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        reply = real(method, header)
        if method == "tell_trial" and not lost:
            lost.append(method)
            raise StorageUnavailableError("reply lost")
        return reply

    monkeypatch.setattr(storage, "_call", losing)
    with pytest.raises(StorageUnavailableError):
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.7])
    with pytest.raises(UpdateFinishedTrialError):  # the retry finds it told
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.7])
    told = storage.get_trial(trial_id)  # what the runner reads to recognise its own tell
    assert (told.state, told.values, told.user_attrs["k"]) == (TrialState.COMPLETE, [0.7], 1)


def test_results_win_over_buffered_attrs_of_the_same_key(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _, trial_id = _start(coordinator, study_id)
    coordinator.storage.set_trial_user_attr(trial_id, attrs.METRICS, {"accuracy": 0.1})
    coordinator.record_results(trial_id, {attrs.METRICS: {"accuracy": 0.9}})
    expected = {"accuracy": 0.9}
    assert coordinator.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == expected
    assert attrs.METRICS not in store.storage.get_trial(trial_id).user_attrs  # buffered
    assert coordinator.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.9])
    assert store.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == expected  # told


def test_results_of_a_trial_not_kept_here_are_written_at_once(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _, trial_id = _start(coordinator, study_id)
    coordinator.storage.forget(trial_id)
    coordinator.record_results(trial_id, {attrs.METRICS: {"accuracy": 0.9}})
    assert store.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == {"accuracy": 0.9}


def test_local_copies_do_not_outlive_their_trial(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 4})).id
    storage = coordinator.storage
    for round in range(3):
        lease, trial_id = _start(coordinator, study_id)
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
        if round == 1:
            continue  # left RUNNING here (an error escaped the attempt)
        assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
        coordinator.finish_and_settle(lease, "complete", None, retain=False)
    assert len(storage._running) <= 1 and not storage._pending


def test_a_stale_trial_does_not_spoil_the_next_lease(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 2})).id
    storage = coordinator.storage
    stale_lease, stale = _start(coordinator, study_id)
    storage.set_trial_intermediate_value(stale, 1, 0.5)  # never sent: the attempt escaped
    assert len(reap_stale(store, grace=-1.0)) == 1  # the reaper ended it meanwhile

    lease, trial_id = _start(coordinator, study_id)  # the requeued ticket, next attempt
    storage.set_trial_param(trial_id, "lr", 0.01, LR)
    coordinator.record_params(lease, {"lr": 0.01})  # carries this trial's writes only
    assert store.storage.get_trial(trial_id).params == {"lr": 0.01}

    # A late heartbeat of the old lease (its keeper gave up waiting) leaves them alone.
    storage.set_trial_intermediate_value(trial_id, 1, 0.25)
    assert not coordinator.heartbeat(stale_lease).held
    assert coordinator.heartbeat(lease).held
    assert store.storage.get_trial(trial_id).intermediate_values == {1: 0.25}
    assert store.storage.get_trial(stale).intermediate_values == {}


def test_a_heartbeat_passes_over_writes_for_a_trial_that_already_ended(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    """The heartbeat thread can carry writes taken just before the trial's tell landed:
    the lease is still held, so the beat succeeds, and the ended trial stays as told."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = _start(coordinator, study_id)
    coordinator.storage.set_trial_user_attr(trial_id, "late", True)
    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])

    assert coordinator.heartbeat(lease).held
    ended = store.storage.get_trial(trial_id)
    assert (ended.state, ended.values) == (TrialState.COMPLETE, [0.5])
    assert "late" not in ended.user_attrs


def test_a_lease_lost_in_any_call_drops_the_local_copy(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 2})).id
    lease, trial_id = _start(coordinator, study_id)
    assert len(reap_stale(store, grace=-1.0)) == 1
    with pytest.raises(LeaseLostError):
        coordinator.save_checkpoint(lease, b"state", 1)
    # Read again: what the runner reports for the trial is what the reaper left.
    assert coordinator.storage.get_trial(trial_id).state == TrialState.FAIL
    with pytest.raises(UpdateFinishedTrialError):
        coordinator.storage.set_trial_user_attr(trial_id, "late", True)


@pytest.fixture
def away_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local time five hours behind UTC (the tests otherwise run in UTC)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("away_from_utc")
def test_a_trial_starts_when_it_was_created_in_any_time_zone(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    before = datetime.now()
    _, trial_id = _start(coordinator, study_id)
    assert coordinator.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    ended = store.storage.get_trial(trial_id)  # Optuna reads its UTC columns as local time
    assert ended.datetime_start is not None and ended.datetime_complete is not None
    assert before - timedelta(seconds=1) <= ended.datetime_start <= ended.datetime_complete
    assert ended.datetime_complete - ended.datetime_start < timedelta(minutes=1)


def test_a_trial_that_is_not_running_is_created_through_optuna(
    store: Store, coordinator: Buffered, tiny_spec: SpecFactory
) -> None:
    """What ``study.enqueue_trial`` makes (WAITING, with params) is created as Optuna
    creates it, and not kept as a local copy."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    _, running = _start(coordinator, study_id)
    template = running_trial_template({"origin": "enqueued"})
    template.state = TrialState.WAITING
    template.params, template.distributions = {"lr": 0.01}, {"lr": LR}
    waiting = coordinator.storage.create_new_trial(study_id, template)
    stored = store.storage.get_trial(waiting)
    assert (stored.number, stored.state, stored.params) == (1, TrialState.WAITING, {"lr": 0.01})
    assert stored.user_attrs == {"origin": "enqueued"}
    assert coordinator.storage.get_trial(waiting).state == TrialState.WAITING
    assert coordinator.storage.get_trial(running).number == 0
