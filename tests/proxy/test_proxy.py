"""``automl proxy``: the coordination protocol over gRPC, against a real server on each backend."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy
from optuna.trial import TrialState

from automl.config import Settings
from automl.proxy import (
    ProxyError,
    ProxyServer,
    RemoteCallError,
    RemoteCoordinator,
    parse_proxy_url,
    wire,
)
from automl.proxy import client as client_module
from automl.spec import StudySpec
from automl.store import (
    ArtifactDamagedError,
    EvaluationState,
    FailureKind,
    FolderArtifactStore,
    LeaseLostError,
    RefitResult,
    RefitState,
    StorageUnavailableError,
    Store,
    StudyNotFoundError,
    StudyStatus,
    TrialTestReport,
    attrs,
    best_trials,
    get_study,
    is_transient,
    reap_stale,
    running_trial_template,
    served_refit,
    submit_study,
    weights_format,
)
from automl.store.artifacts import open_weights
from automl.worker import Worker, WorkerOptions
from tests.conftest import free_port_pair
from tests.proxy.older import proxy_of_protocol
from tests.store.conftest import drive, start_trial

SpecFactory = Callable[..., StudySpec]


def test_wire_round_trip_and_malformed_messages() -> None:
    header, payload = wire.unpack(wire.pack({"a": [1, "x"]}, b"\x00\xff"))
    assert (header, payload) == ({"a": [1, "x"]}, b"\x00\xff")
    for bad in (b"", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02[]"):
        with pytest.raises(ValueError):
            wire.unpack(bad)


def test_a_worker_retries_a_restarted_proxy_well_within_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gRPC's default reconnect backoff grows to 120 s: after a proxy restart, workers
    came back after the new proxy had reaped their live trials (grace 60 s)."""
    opened: dict[str, dict[str, object]] = {}
    real = client_module.grpc.insecure_channel

    def recording(target: str, options: list[tuple[str, object]] | None = None) -> object:
        opened[target] = dict(options or [])
        return real(target, options=options)

    monkeypatch.setattr(client_module.grpc, "insecure_channel", recording)
    RemoteCoordinator("127.0.0.1", 4000).close()  # channels connect lazily

    backoff_ms = opened["127.0.0.1:4001"]["grpc.max_reconnect_backoff_ms"]
    assert isinstance(backoff_ms, int) and backoff_ms / 1000 < Settings().grace_period / 4


@pytest.mark.parametrize(
    ("url", "expected"),
    [("grpc://proxy:14000", ("proxy", 14000)), ("grpc://10.0.0.5", ("10.0.0.5", 13000))],
)
def test_proxy_urls(url: str, expected: tuple[str, int]) -> None:
    assert parse_proxy_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://proxy:1",
        "grpc://",
        "grpc://h:99999",
        "grpc://h:1/db",
        "grpc://h:0",
        "grpc://h:65535",
    ],
)
def test_bad_proxy_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"proxy URL|port"):
        parse_proxy_url(url)


def test_a_worker_completes_a_study_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3, "max_failed": 0})).id
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    worker = Worker(None, options, coordinator=proxy)

    assert worker.run() == 3
    detail = get_study(store, study_id)
    assert detail.status == StudyStatus.COMPLETED
    assert (detail.counts.complete, detail.counts.running, detail.counts.waiting) == (3, 0, 0)
    best = max(store.storage.get_all_trials(study_id), key=lambda t: t.value or 0.0)
    # The weights went through the proxy into the store's own artifact store.
    with open_weights(best, store.artifacts) as reader:
        assert len(reader.read()) > 1000


def test_a_trial_another_tool_ended_is_reported_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    submit_study(store, tiny_spec(budget={"n_trials": 1}))
    lease = proxy.claim("w1", None)
    assert lease is not None
    trial_id = proxy.start_trial(lease, running_trial_template({attrs.LEASE: lease.key}))
    assert proxy.heartbeat(lease).trial_ended is False

    store.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.99])
    status = proxy.heartbeat(lease)

    assert (status.held, status.trial_ended) == (True, True)
    assert proxy.storage.get_trial(trial_id).state == TrialState.COMPLETE  # not a stale copy


def test_claims_leases_and_errors_keep_their_meaning(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(
        store, tiny_spec(budget={"n_trials": 1, "max_retries": 1, "max_failed": 0})
    ).id
    assert proxy.spec(study_id).name == "tiny"
    lease = proxy.claim("w1", study_id)
    assert lease is not None and lease.study_id == study_id
    assert proxy.claim("w2", study_id) is None  # the budget is exact through the proxy too
    assert proxy.heartbeat(lease).held

    proxy.save_checkpoint(lease, b"state-1", epoch=1)
    reclaimed = _reap_and_reclaim(store, study_id, proxy)
    assert reclaimed.attempt == 2 and proxy.load_checkpoint(reclaimed) == b"state-1"

    assert not proxy.heartbeat(lease).held
    with pytest.raises(LeaseLostError):
        proxy.record_params(lease, {"lr": 0.01})
    with pytest.raises(StudyNotFoundError):
        proxy.spec(study_id + 1000)
    assert proxy.status(study_id + 1000) is None

    assert proxy.release(reclaimed, FailureKind.ERROR, "boom", requeue=False)
    assert proxy.end_if_done(study_id) == StudyStatus.FAILED


def _reap_and_reclaim(store: Store, study_id: int, proxy: RemoteCoordinator):
    """Ages the running ticket past any grace period, reaps it and claims it again."""
    assert len(reap_stale(store, grace=-1.0)) == 1
    lease = proxy.claim("w3", study_id)
    assert lease is not None
    return lease


def test_artifacts_through_the_proxy(store: Store, proxy: RemoteCoordinator) -> None:
    proxy.artifacts.write("a-1", io.BytesIO(b"x" * 100_000))
    with store.artifacts.open_reader("a-1") as reader:
        assert reader.read() == b"x" * 100_000
    assert proxy.artifacts.open_reader("a-1").read() == b"x" * 100_000
    proxy.artifacts.remove("a-1")
    with pytest.raises(ArtifactNotFound):
        proxy.artifacts.open_reader("a-1")
    with pytest.raises(ArtifactNotFound):
        proxy.artifacts.remove("a-1")


def test_a_damaged_artifact_arrives_as_such_through_the_proxy(sqlite_store: Store) -> None:
    """On the folder store (SQLite's: the only one that checks digests; a database keeps
    its own bytes)."""
    assert isinstance(sqlite_store.artifacts, FolderArtifactStore)
    server = ProxyServer(sqlite_store, "127.0.0.1", free_port_pair(), reap_interval=None)
    server.start()
    client = RemoteCoordinator("127.0.0.1", server.port)
    try:
        client.artifacts.write("a-2", io.BytesIO(b"x" * 1000))
        (sqlite_store.artifacts.directory / "a-2").write_bytes(b"y" * 1000)

        with pytest.raises(ArtifactDamagedError, match="artifact a-2 is damaged"):
            client.artifacts.open_reader("a-2")
    finally:
        client.close()
        server.stop(grace=0)


def test_an_unreachable_proxy_is_a_transient_fault(sqlite_store: Store) -> None:
    client = RemoteCoordinator("127.0.0.1", free_port_pair())
    try:
        with pytest.raises(StorageUnavailableError) as caught:
            client.ping(timeout=2)
        assert is_transient(caught.value)
        with pytest.raises(Exception) as optuna_call:  # Optuna's own proxy client
            client.storage.get_all_studies()
        assert is_transient(optuna_call.value)
    finally:
        client.close()


def test_a_taken_port_is_a_clear_error(sqlite_store: Store, tmp_path: Path) -> None:
    port = free_port_pair()
    first = ProxyServer(sqlite_store, "127.0.0.1", port, threads=2, reap_interval=None).start()
    try:
        with pytest.raises(ProxyError, match=f"127.0.0.1:{port}"):
            ProxyServer(sqlite_store, "127.0.0.1", port, threads=2, reap_interval=None).start()
    finally:
        first.stop(grace=0)


def test_the_proxy_keeps_the_finished_trials_of_its_cached_studies_only(
    sqlite_store: Store, tiny_spec: SpecFactory
) -> None:
    ids = [submit_study(sqlite_store, tiny_spec(name=f"s{n}")).id for n in range(3)]
    server = ProxyServer(
        sqlite_store, "127.0.0.1", free_port_pair(), threads=2, reap_interval=None, cached_studies=2
    ).start()
    client = GrpcStorageProxy(host="127.0.0.1", port=server.port)
    try:
        for study_id in [*ids, ids[1]]:
            assert client.get_all_trials(study_id) == []
        assert server.optuna_storage.cached_studies() == [ids[2], ids[1]]
    finally:
        client.close()
        server.stop(grace=0)


def test_trials_created_through_the_proxy_are_optuna_trials(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    Worker(None, options, coordinator=proxy).run()
    (trial,) = store.storage.get_all_trials(study_id)
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1]
    assert set(trial.params) >= {"optimizer", "lr"}


def test_test_split_evaluation_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    dataset = {"source": "digits", "options": {"test_fraction": 0.2}}
    study_id = submit_study(store, tiny_spec(dataset=dataset, budget={"n_trials": 2})).id
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    assert Worker(None, options, coordinator=proxy).run() == 2

    best = best_trials(store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE
    [trial] = best.trials
    assert trial.test_metrics is not None and trial.test_confusion is not None
    assert sum(map(sum, trial.test_confusion)) == 359  # a stratified 20% of 1,797 digits
    assert proxy.claim_evaluation("w2", study_id) is None  # evaluated once


def test_a_proxy_of_protocol_3_gets_test_reports_and_refits_it_can_read(
    store: Store, tiny_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protocol 4 added most_confused; a proxy of 3 refused a report with it, as the
    stricter readers below do."""

    def strict_report(data: dict[str, Any]) -> TrialTestReport:
        assert "most_confused" not in data, data
        return TrialTestReport(**data)

    def strict_refit(data: dict[str, Any] | None) -> RefitResult | None:
        assert data is not None and "test_most_confused" not in data, data
        return RefitResult(**data)

    monkeypatch.setattr(wire, "report_from_wire", strict_report)
    monkeypatch.setattr(wire, "refit_result_from_wire", strict_refit)
    server = proxy_of_protocol(store, monkeypatch, 3)
    client = RemoteCoordinator("127.0.0.1", server.port)
    try:
        assert client.ping() == 3
        dataset = {"source": "digits", "options": {"test_fraction": 0.2}}
        spec = tiny_spec(dataset=dataset, budget={"n_trials": 1}, refit=True)
        study_id = submit_study(store, spec).id
        # Beats often enough to find the proxy without beat_evaluation, which it outlives.
        options = WorkerOptions(
            device="cpu", study_id=study_id, exit_when_idle=True, threads=1, heartbeat_interval=0.05
        )
        assert Worker(None, options, coordinator=client).run() == 1
    finally:
        client.close()
        server.stop(grace=0)

    best = best_trials(store, study_id)
    assert best.test_evaluation is not None
    assert best.test_evaluation.state == EvaluationState.DONE
    [trial] = best.trials
    assert trial.test_metrics is not None and trial.test_most_confused is None
    assert best.refit is not None and best.refit.state == RefitState.DONE


def test_evaluation_claims_keep_their_meaning_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1, "max_failed": 0})).id
    drive(store, study_id, [0.5])
    assert proxy.end_if_done(study_id) == StudyStatus.COMPLETED
    lease = proxy.claim_evaluation("w1", None)
    assert lease is not None and lease.trials == (0,)
    assert proxy.claim_evaluation("w2", None) is None
    trial_id = store.storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    report = TrialTestReport(trial_id, 0, {"accuracy": 0.5}, [], [[1, 1], [0, 2]], 4)
    stranger = dataclasses.replace(lease, worker_id="w2")
    assert proxy.beat_evaluation(lease)
    assert not proxy.beat_evaluation(stranger)
    assert not proxy.finish_evaluation(stranger, EvaluationState.DONE, [report], None)
    assert proxy.finish_evaluation(lease, EvaluationState.DONE, [report], None)
    [best] = best_trials(store, study_id).trials
    assert (best.test_metrics, best.test_confusion) == ({"accuracy": 0.5}, [[1, 1], [0, 2]])


def test_workers_through_the_proxy_keep_only_the_top_k_weights(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    spec = tiny_spec(budget={"n_trials": 3, "max_failed": 0}, keep_weights=1)
    study_id = submit_study(store, spec).id
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    assert Worker(None, options, coordinator=proxy).run() == 3  # retains after each trial

    trials = store.storage.get_all_trials(study_id)
    best = max(trials, key=lambda t: (t.values[0], -t.number))
    assert [t.number for t in trials if attrs.WEIGHTS in t.user_attrs] == [best.number]
    assert all(attrs.WEIGHTS_REMOVED in t.user_attrs for t in trials if t is not best)
    assert proxy.retain_weights(study_id) == []
    assert proxy.retain_weights(study_id + 1000) == []  # no such study: nothing to do


def test_outranked_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 3})).id
    drive(store, study_id, [0.3, 0.9, 0.6])
    assert proxy.outranked(study_id, 0.5, 9, True, 2)  # 0.9 and 0.6 rank above
    assert not proxy.outranked(study_id, 0.7, 9, True, 2)  # only 0.9
    assert not proxy.outranked(study_id, 0.5, 9, False, 2)  # minimized: only 0.3
    assert proxy.outranked(study_id, 0.95, 9, False, 3)  # all three are lower
    with pytest.raises(RemoteCallError, match="at least 1"):
        proxy.outranked(study_id, 0.5, 9, True, 0)


def test_refit_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    dataset = {"source": "digits", "options": {"test_fraction": 0.2}}
    spec = tiny_spec(dataset=dataset, budget={"n_trials": 1}, refit=True)
    study_id = submit_study(store, spec).id
    options = WorkerOptions(device="cpu", study_id=study_id, exit_when_idle=True, threads=1)
    assert Worker(None, options, coordinator=proxy).run() == 1

    refit = best_trials(store, study_id).refit
    assert refit is not None and refit.state == RefitState.DONE, refit
    assert refit.trial == 0 and refit.test_samples == 359
    result = served_refit(store, study_id)
    assert result is not None
    with store.artifacts.open_reader(result.weights) as reader:  # written through the proxy
        assert weights_format(reader.read(9)) == "safetensors"
    assert proxy.claim_refit("w2", study_id) is None  # refit once


def test_refit_claims_keep_their_meaning_through_the_proxy(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    digits = {"source": "digits", "options": {"test_fraction": 0.2}}
    study_id = submit_study(store, tiny_spec(dataset=digits, budget={"n_trials": 1}, refit=True)).id
    drive(store, study_id, [0.5])
    assert proxy.end_if_done(study_id) == StudyStatus.COMPLETED
    lease = proxy.claim_refit("w1", None)
    assert lease is not None and lease.trial_number == 0
    assert proxy.claim_refit("w2", None) is None
    assert proxy.beat_refit(lease)
    stranger = dataclasses.replace(lease, worker_id="w2")
    assert not proxy.beat_refit(stranger)
    assert not proxy.release_refit(stranger)
    assert not proxy.finish_refit(stranger, RefitState.FAILED, None, "not mine")
    assert proxy.release_refit(lease)  # a stopping worker gives it back
    lease = proxy.claim_refit("w2", None)
    assert lease is not None
    assert proxy.finish_refit(lease, RefitState.FAILED, None, "no test split")
    refit = best_trials(store, study_id).refit
    assert refit is not None and (refit.state, refit.note) == (RefitState.FAILED, "no test split")


def test_results_are_recorded_through_the_proxy_until_the_trial_ends(
    store: Store, proxy: RemoteCoordinator, tiny_spec: SpecFactory
) -> None:
    study_id = submit_study(store, tiny_spec(budget={"n_trials": 1})).id
    _, trial_id = start_trial(store, study_id)

    proxy.record_results(trial_id, {attrs.METRICS: {"val_accuracy": 0.5}, attrs.NOTES: ["n"]})
    user_attrs = store.storage.get_trial(trial_id).user_attrs
    assert (user_attrs[attrs.METRICS], user_attrs[attrs.NOTES]) == ({"val_accuracy": 0.5}, ["n"])

    store.storage.set_trial_state_values(trial_id, TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        proxy.record_results(trial_id, {attrs.METRICS: {"val_accuracy": 0.9}})
