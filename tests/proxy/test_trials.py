"""The worker's trial storage through ``automl proxy``: local reads, batched writes, and
every refusal a trial's writes met through Optuna's own proxy client."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from automl.cli.commands import _connect_proxy_waiting
from automl.cli.errors import CliError
from automl.proxy import ProxyServer, RemoteCallError, RemoteCoordinator
from automl.proxy import server as server_module
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
)
from automl.worker import Worker, WorkerOptions
from automl.worker.coordinator import CoordinatorTooOldError
from tests.conftest import free_port_pair

SpecFactory = Callable[..., StudySpec]
LR = FloatDistribution(1e-4, 1e-1, log=True)


@pytest.fixture
def proxy(store: Store) -> Iterator[RemoteCoordinator]:
    """A proxy on the store (no reaper: tests reap explicitly) and a client of it."""
    server = ProxyServer(store, "127.0.0.1", free_port_pair(), threads=4, reap_interval=None)
    server.start()
    client = RemoteCoordinator("127.0.0.1", server.port)
    yield client
    client.close()
    server.stop(grace=0)


def _start(proxy: RemoteCoordinator, study_id: int) -> tuple[Lease, int]:
    """Claims through the proxy and creates the attempt's trial as the worker does."""
    lease = proxy.claim("w1", study_id)
    assert lease is not None
    template = running_trial_template({attrs.LEASE: lease.key}, {"fixed_params": {"lr": 0.01}})
    trial_id = proxy.storage.create_new_trial(study_id, template)
    proxy.record_trial(lease, trial_id, proxy.storage.get_trial(trial_id).number)
    return lease, trial_id


def _reporting(store: Store, proxy: RemoteCoordinator, spec: StudySpec) -> tuple[int, Lease, int]:
    """Submits ``spec``, starts a trial through the proxy and reports its first epoch (0.5),
    which the local copy buffers; returns the study, the lease and the trial."""
    study_id = submit_study(store, spec).id
    lease, trial_id = _start(proxy, study_id)
    proxy.storage.set_trial_intermediate_value(trial_id, 1, 0.5)
    return study_id, lease, trial_id


def test_a_running_trial_is_read_locally_and_written_with_the_next_call(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(
        store, proxy, tiny_spec(budget={"n_trials": 1, "max_failed": 0})
    )
    storage = proxy.storage
    storage.set_trial_param(trial_id, "lr", 0.01, LR)
    storage.set_trial_user_attr(trial_id, "config", {"a": (1, 2)})
    storage.set_trial_system_attr(trial_id, "artifacts:x", {"id": "x"})

    local = storage.get_trial(trial_id)
    assert local.params == {"lr": 0.01} and local.user_attrs["config"] == {"a": [1, 2]}
    assert local.system_attrs["fixed_params"] == {"lr": 0.01}
    assert store.storage.get_trial(trial_id).params == {}  # not sent yet

    assert proxy.heartbeat(lease).held  # carries them
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

    assert proxy.finish_and_settle(lease, "complete", None, retain=True)  # settled with it
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


def test_a_reaped_trial_refuses_the_buffered_writes(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(
        store, proxy, tiny_spec(budget={"n_trials": 2, "max_retries": 2})
    )
    storage = proxy.storage
    assert len(reap_stale(store, grace=-1.0)) == 1

    assert not proxy.heartbeat(lease).held
    assert storage.get_trial(trial_id).state == TrialState.FAIL  # read from the proxy again
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_intermediate_value(trial_id, 2, 0.6)
    assert store.storage.get_trial(trial_id).intermediate_values == {}

    # Told before any heartbeat noticed: the tell is refused, and so are its writes.
    lease, second = _start(proxy, study_id)
    storage.set_trial_user_attr(second, "late", True)
    assert len(reap_stale(store, grace=-1.0)) == 1
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_state_values(second, TrialState.COMPLETE, [0.9])
    reaped = storage.get_trial(second)
    assert reaped.state == TrialState.FAIL and "late" not in reaped.user_attrs
    with pytest.raises(LeaseLostError):
        proxy.finish_and_settle(lease, "complete", None, retain=True)


def test_writes_wait_out_a_transient_fault_and_go_with_a_refusal(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id, lease, trial_id = _reporting(store, proxy, tiny_spec(budget={"n_trials": 1}))
    storage = proxy.storage

    with pytest.raises(StorageUnavailableError), storage.pending_writes(trial_id) as writes:
        assert writes
        raise StorageUnavailableError("proxy down")
    # Kept: the study's trials are read after sending them.
    [trial] = storage.get_all_trials(study_id)
    assert trial.intermediate_values == {1: 0.5}

    storage.set_trial_intermediate_value(trial_id, 2, 0.6)
    with pytest.raises(RuntimeError), storage.pending_writes(trial_id) as writes:
        raise RuntimeError("refused")
    assert proxy.heartbeat(lease).held
    assert store.storage.get_trial(trial_id).intermediate_values == {1: 0.5}  # dropped
    # ... but not silently: the trial's next step says so, as the database path would.
    with pytest.raises(RuntimeError, match="refused"):
        proxy.record_params(lease, {"lr": 0.01})
    assert storage.set_trial_state_values(trial_id, TrialState.FAIL)


def test_a_worker_trial_goes_through_the_coordination_calls_only(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    calls: Counter[str] = Counter()
    backend = proxy.storage.backend
    stub = backend._stub

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls[name] += 1
            return getattr(stub, name)

    backend._stub = Counting()
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    assert Worker(None, options, coordinator=proxy).run() == 2

    # No param, report, attribute, state or creation of a trial through Optuna's client;
    # one read of the best trial for the study's test evaluation at the end.
    assert not [name for name in calls if name.startswith(("Set", "CreateNewTrial"))], calls
    assert calls["GetTrial"] <= 1, calls
    trials = store.storage.get_all_trials(study_id)
    assert all(t.state == TrialState.COMPLETE and t.params for t in trials)
    assert all(attrs.CONFIG in t.user_attrs and t.intermediate_values for t in trials)
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


def test_a_heartbeat_refused_for_good_fails_the_trial_at_its_tell(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    lease, first = _start(proxy, study_id)
    proxy.storage.set_trial_param(first, "x", 1.0, FloatDistribution(0.0, 2.0))
    assert proxy.storage.set_trial_state_values(first, TrialState.COMPLETE, [1.0])
    proxy.finish_and_settle(lease, "complete", None, retain=False)

    lease, second = _start(proxy, study_id)
    # Another kind of distribution under the same name: the proxy refuses it for good.
    proxy.storage.set_trial_param(second, "x", 1, IntDistribution(0, 2))
    with pytest.raises(RemoteCallError):  # the keeper logs it and goes on
        proxy.heartbeat(lease)
    with pytest.raises(RemoteCallError, match="ValueError"):
        proxy.storage.set_trial_state_values(second, TrialState.COMPLETE, [1.0])
    assert store.storage.get_trial(second).state == TrialState.RUNNING  # not completed


def test_a_release_keeps_the_buffered_reports(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    _study_id, lease, trial_id = _reporting(store, proxy, tiny_spec(budget={"n_trials": 1}))
    # What SIGTERM does: the attempt ends, its ticket goes back to the queue.
    assert proxy.release(lease, FailureKind.INTERRUPTED, "worker stopping")
    released = store.storage.get_trial(trial_id)
    assert released.state.is_finished() and released.intermediate_values == {1: 0.5}
    assert trial_id not in proxy.storage._running and not proxy.storage._pending


def test_a_write_made_during_a_failed_call_wins_over_the_restored_one(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = _start(proxy, study_id)
    storage = proxy.storage
    storage.set_trial_user_attr(trial_id, "k", "old")
    storage.set_trial_intermediate_value(trial_id, 1, 0.1)
    with pytest.raises(StorageUnavailableError), storage.pending_writes(trial_id) as writes:
        assert writes
        storage.set_trial_user_attr(trial_id, "k", "new")  # made while the call is in flight
        raise StorageUnavailableError("proxy down")
    assert proxy.heartbeat(lease).held
    remote = store.storage.get_trial(trial_id)
    assert remote.user_attrs["k"] == "new" and remote.intermediate_values == {1: 0.1}


def test_a_read_waits_for_the_writes_of_a_heartbeat_in_flight(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id, _lease, trial_id = _reporting(store, proxy, tiny_spec(budget={"n_trials": 1}))
    storage = proxy.storage
    read: list[list[FrozenTrial]] = []
    with storage.pending_writes(trial_id) as writes:  # a heartbeat took them
        reader = threading.Thread(target=lambda: read.append(storage.get_all_trials(study_id)))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive()  # waits for the call in flight
        proxy.call("write_trial", {"writes": writes})
    reader.join(timeout=30)
    [[trial]] = read
    assert trial.intermediate_values == {1: 0.5}


def test_a_lost_tell_reply_is_recognised_on_retry(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory, monkeypatch: Any
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _lease, trial_id = _start(proxy, study_id)
    storage = proxy.storage
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
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _, trial_id = _start(proxy, study_id)
    proxy.storage.set_trial_user_attr(trial_id, attrs.METRICS, {"accuracy": 0.1})
    proxy.record_results(trial_id, {attrs.METRICS: {"accuracy": 0.9}})
    expected = {"accuracy": 0.9}
    assert store.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == expected
    assert proxy.storage.get_trial(trial_id).user_attrs[attrs.METRICS] == expected


def test_local_copies_do_not_outlive_their_trial(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 4, "max_failed": 4})).id
    storage = proxy.storage
    for round in range(3):
        lease, trial_id = _start(proxy, study_id)
        storage.set_trial_intermediate_value(trial_id, 1, 0.5)
        if round == 1:
            continue  # left RUNNING here (an error escaped the attempt)
        assert storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
        proxy.finish_and_settle(lease, "complete", None, retain=False)
    assert len(storage._running) <= 1 and not storage._pending


def test_a_stale_trial_does_not_spoil_the_next_lease(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_retries": 2})).id
    storage = proxy.storage
    stale_lease, stale = _start(proxy, study_id)
    storage.set_trial_intermediate_value(stale, 1, 0.5)  # never sent: the attempt escaped
    assert len(reap_stale(store, grace=-1.0)) == 1  # the reaper ended it meanwhile

    lease, trial_id = _start(proxy, study_id)  # the requeued ticket, next attempt
    storage.set_trial_param(trial_id, "lr", 0.01, LR)
    proxy.record_params(lease, {"lr": 0.01})  # carries this trial's writes only
    assert store.storage.get_trial(trial_id).params == {"lr": 0.01}

    # A late heartbeat of the old lease (its keeper gave up waiting) leaves them alone.
    storage.set_trial_intermediate_value(trial_id, 1, 0.25)
    assert not proxy.heartbeat(stale_lease).held
    assert proxy.heartbeat(lease).held
    assert store.storage.get_trial(trial_id).intermediate_values == {1: 0.25}
    assert store.storage.get_trial(stale).intermediate_values == {}


@pytest.fixture
def old_proxy(store: Store, monkeypatch: Any) -> Iterator[RemoteCoordinator]:
    """A proxy as automl served it before the running trial's calls (protocol 1)."""
    plain = server_module.CoordinationService.__init__

    def old(self: server_module.CoordinationService, coordinator: Any) -> None:
        plain(self, coordinator)
        for method in ("create_trial", "write_trial", "tell_trial", "finish_and_settle"):
            del self.handlers[method]
        self.handlers["ping"] = lambda header, _: ({}, b"")

    monkeypatch.setattr(server_module.CoordinationService, "__init__", old)
    server = ProxyServer(store, "127.0.0.1", free_port_pair(), threads=4, reap_interval=None)
    server.start()
    monkeypatch.setattr(server_module.CoordinationService, "__init__", plain)
    client = RemoteCoordinator("127.0.0.1", server.port)
    yield client
    client.close()
    server.stop(grace=0)


def test_a_new_worker_on_an_old_proxy_stops_with_a_clear_error(
    store: Store, old_proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2})).id
    url = f"grpc://127.0.0.1:{old_proxy.port}"
    with pytest.raises(CliError) as raised:
        _connect_proxy_waiting(url)
    assert str(raised.value) == (
        f"automl proxy at 127.0.0.1:{old_proxy.port} is too old for this worker; upgrade the proxy"
    )

    # Replaced by an old proxy after connecting: the worker stops, the budget is intact.
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    with pytest.raises(CoordinatorTooOldError, match="upgrade the proxy"):
        Worker(None, options, coordinator=old_proxy).run()
    assert get_study(store, study_id).status.is_active
    assert store.storage.get_all_trials(study_id) == []
    assert old_proxy.claim("w2", study_id) is not None  # the ticket went back


def test_an_old_worker_without_writes_runs_a_trial(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    """A worker of protocol 1: Optuna's client for the trial, calls without ``writes``."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    backend = proxy.storage.backend
    reply, _ = proxy.call("claim", {"worker_id": "old", "study_id": study_id})
    lease = reply["lease"]
    trial_id = backend.create_new_trial(study_id)
    number = backend.get_trial_number_from_id(trial_id)
    proxy.call("record_trial", {"lease": lease, "trial_id": trial_id, "number": number})
    backend.set_trial_param(trial_id, "lr", 0.01, LR)
    proxy.call("record_params", {"lease": lease, "params": {"lr": 0.01}})
    backend.set_trial_intermediate_value(trial_id, 1, 0.5)
    assert proxy.call("heartbeat", {"lease": lease})[0]["held"]
    proxy.call("record_results", {"trial_id": trial_id, "user_attrs": {"done": True}})
    assert backend.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    proxy.call("finish", {"lease": lease, "outcome": "complete", "failure": None})
    proxy.call("end_if_done", {"study_id": study_id})

    trial = store.storage.get_trial(trial_id)
    assert (trial.state, trial.params, trial.intermediate_values) == (
        TrialState.COMPLETE,
        {"lr": 0.01},
        {1: 0.5},
    )
    assert trial.user_attrs["done"] is True
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


def test_a_heartbeat_passes_over_writes_for_a_trial_that_already_ended(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    """The heartbeat thread can carry writes taken just before the trial's tell landed:
    the lease is still held, so the beat succeeds, and the ended trial stays as told."""
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = _start(proxy, study_id)
    proxy.storage.set_trial_user_attr(trial_id, "late", True)
    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])

    assert proxy.heartbeat(lease).held
    ended = store.storage.get_trial(trial_id)
    assert (ended.state, ended.values) == (TrialState.COMPLETE, [0.5])
    assert "late" not in ended.user_attrs
