"""The worker's trial storage through ``automl proxy``: local reads, batched writes, and
every refusal a trial's writes met through Optuna's own proxy client."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from optuna.distributions import FloatDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from automl.proxy import ProxyServer, RemoteCoordinator
from automl.spec import StudySpec
from automl.store import (
    Lease,
    LeaseLostError,
    StorageUnavailableError,
    Store,
    StudyStatus,
    attrs,
    get_study,
    reap_stale,
    submit_study,
)
from automl.worker import Worker, WorkerOptions
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
    template = FrozenTrial(
        number=0,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={attrs.LEASE: lease.key},
        system_attrs={"fixed_params": {"lr": 0.01}},
        intermediate_values={},
        trial_id=0,
    )
    trial_id = proxy.storage.create_new_trial(study_id, template)
    proxy.record_trial(lease, trial_id, proxy.storage.get_trial(trial_id).number)
    return lease, trial_id


def test_a_running_trial_is_read_locally_and_written_with_the_next_call(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    lease, trial_id = _start(proxy, study_id)
    storage = proxy.storage
    storage.set_trial_param(trial_id, "lr", 0.01, LR)
    storage.set_trial_intermediate_value(trial_id, 1, 0.5)
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
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 2, "max_retries": 2})).id
    lease, trial_id = _start(proxy, study_id)
    storage = proxy.storage
    storage.set_trial_intermediate_value(trial_id, 1, 0.5)
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
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    lease, trial_id = _start(proxy, study_id)
    storage = proxy.storage
    storage.set_trial_intermediate_value(trial_id, 1, 0.5)

    with pytest.raises(StorageUnavailableError), storage.pending_writes() as writes:
        assert writes
        raise StorageUnavailableError("proxy down")
    # Kept: the study's trials are read after sending them.
    [trial] = storage.get_all_trials(study_id)
    assert trial.intermediate_values == {1: 0.5}

    storage.set_trial_intermediate_value(trial_id, 2, 0.6)
    with pytest.raises(RuntimeError), storage.pending_writes() as writes:
        raise RuntimeError("refused")
    assert proxy.heartbeat(lease).held
    assert store.storage.get_trial(trial_id).intermediate_values == {1: 0.5}  # dropped


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
