"""The worker's trial storage through ``automl proxy``: no trial write through Optuna's
own proxy client, and workers and proxies of different protocols (the behaviour of the
storage itself, on both paths: ``tests/store/test_trial_buffer.py``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage, GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

import automl.proxy.trials
import automl.store.study_caches
import automl.worker.loop
from automl.cli.commands import _connect_proxy_waiting
from automl.cli.errors import CliError
from automl.proxy import ProxyServer, RemoteCallError, RemoteCoordinator, wire
from automl.proxy import server as server_module
from automl.spec import StudySpec
from automl.store import (
    Store,
    StudyStatus,
    attrs,
    get_study,
    running_trial_template,
    submit_study,
)
from automl.store.trial_buffer import template_to_wire
from automl.worker import Worker, WorkerOptions
from automl.worker.coordinator import CoordinatorTooOldError
from tests.conftest import free_port_pair
from tests.proxy.older import proxy_of_protocol

SpecFactory = Callable[..., StudySpec]
LR = FloatDistribution(1e-4, 1e-1, log=True)


def test_a_worker_trial_goes_through_the_coordination_calls_only(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory, monkeypatch: Any
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_failed": 0})).id
    calls: Counter[str] = Counter()

    class Counting:
        def __init__(self, stub: Any) -> None:
            self.stub = stub

        def __getattr__(self, name: str) -> Any:
            calls[name] += 1
            return getattr(self.stub, name)

    class CountingClient(GrpcStorageProxy):
        """Optuna's client of the proxy, counting the calls of each (one per study)."""

        def _setup(self) -> None:
            super()._setup()
            self._stub = Counting(self._stub)

    monkeypatch.setattr(automl.proxy.trials, "GrpcStorageProxy", CountingClient)
    client = RemoteCoordinator(proxy.host, proxy.port)
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    try:
        assert Worker(None, options, coordinator=client).run() == 2
    finally:
        client.close()
    assert calls["GetStudyDirections"] >= 1, calls  # loading the study went through them

    # No param, report, attribute, state or creation of a trial through Optuna's client;
    # one read of the best trial for the study's test evaluation at the end.
    assert not [name for name in calls if name.startswith(("Set", "CreateNewTrial"))], calls
    assert calls["GetTrial"] <= 1, calls
    trials = store.storage.get_all_trials(study_id)
    assert all(t.state == TrialState.COMPLETE and t.params for t in trials)
    assert all(attrs.CONFIG in t.user_attrs and t.intermediate_values for t in trials)
    assert get_study(store, study_id).status == StudyStatus.COMPLETED


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


def test_a_malformed_trial_start_is_refused_in_one_line_and_creates_nothing(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    template = template_to_wire(running_trial_template())
    bad_leases = [{"ticket": 1}, "1:1"]
    for lease in bad_leases:
        header = {"study_id": study_id, "template": template, "lease": lease}
        with pytest.raises(RemoteCallError) as raised:
            proxy.call("create_trial", header)
        assert "\n" not in str(raised.value)
    waiting = template_to_wire(running_trial_template())
    waiting["state"] = "WAITING"
    lease = wire.lease_to_wire(proxy.claim("w1", study_id))  # type: ignore[arg-type]
    with pytest.raises(RemoteCallError, match="starts a lease's trial"):
        proxy.call("create_trial", {"study_id": study_id, "template": waiting, "lease": lease})
    assert store.storage.get_all_trials(study_id) == []


def test_a_new_worker_refuses_a_proxy_of_protocol_2(store: Store, monkeypatch: Any) -> None:
    """Protocol 2 ignores the lease that ``create_trial`` carries: a retried attempt's
    trial would stay unknown to the reaper, so the worker must not run on it."""
    server = proxy_of_protocol(store, monkeypatch, 2)
    try:
        with pytest.raises(CliError, match="is too old for this worker; upgrade the proxy"):
            _connect_proxy_waiting(f"grpc://127.0.0.1:{server.port}")
    finally:
        server.stop(grace=0)


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


def test_a_worker_behind_the_proxy_forgets_studies_past_its_cache(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory, monkeypatch: Any
) -> None:
    monkeypatch.setattr(automl.worker.loop, "CACHED_STUDIES", 1)
    monkeypatch.setattr(automl.store.study_caches, "CACHED_STUDIES", 1)
    client = RemoteCoordinator(proxy.host, proxy.port)  # its caches hold one study
    ids = [
        submit_study(store, tiny_spec(name=f"s{n}", budget={"n_trials": 1})).id for n in range(2)
    ]
    firsts: list[BaseStorage] = []

    def seen(study_id: int, trial: FrozenTrial, outcome: str) -> None:
        cache = client.storage.caches.cached(study_id)
        assert cache is not None
        firsts.append(cache)

    options = WorkerOptions(device="cpu", exit_when_idle=True, threads=1)
    worker = Worker(None, options, coordinator=client)
    worker.on_trial_end = seen
    try:
        assert worker.run() == 2
        # A client of the proxy's Optuna storage (a cache) per study; the first one's
        # channel was closed when the second study came.
        assert client.storage.caches.cached_studies() == [ids[1]]
        assert firsts[1] is not firsts[0]
        with pytest.raises(ValueError, match="closed"):
            firsts[0].get_study_name_from_id(ids[0])
        name = store.storage.get_study_name_from_id(ids[1])
        assert firsts[1].get_study_name_from_id(ids[1]) == name
    finally:
        client.close()
    for study_id in ids:
        assert [t.state for t in store.storage.get_all_trials(study_id)] == [TrialState.COMPLETE]
