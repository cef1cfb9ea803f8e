"""A worker's side of ``automl proxy``: a ``Coordinator`` and an artifact store over gRPC.

A worker given ``AUTOML_STORAGE=grpc://host:port`` holds no database connection: its
trials go through Optuna's ``GrpcStorageProxy`` (``port``) and everything else through the
coordination service (``port + 1``). Errors arrive as the exceptions the worker knows from
the database path: ``LeaseLostError``, ``StudyNotFoundError``, ``ArtifactNotFound``, and
``StorageUnavailableError`` (transient: the worker waits and repeats) while the proxy or
its database is unreachable.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import grpc
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial

from automl.config import PROXY_SCHEME, is_proxy_url
from automl.proxy import wire
from automl.proxy.trials import ProxyTrialStorage
from automl.proxy.wire import ProxyTooOldError
from automl.spec import StudySpec
from automl.spec_reading import UnreadableStudyError
from automl.store import (
    ArtifactDamagedError,
    EvaluationLease,
    EvaluationState,
    FailureKind,
    Lease,
    LeaseLostError,
    LeaseStatus,
    RefitLease,
    RefitResult,
    RefitState,
    StorageUnavailableError,
    StudyNotFoundError,
    StudyStatus,
    TrialTestReport,
)
from automl.url_secrets import without_password

DEFAULT_PROXY_PORT = 13000
CALL_TIMEOUT_S = 60.0
TRANSFER_TIMEOUT_S = 600.0
"""Calls that carry a checkpoint or weights may take longer than the others."""


class RemoteCallError(RuntimeError):
    """The proxy failed a call for a reason other than the ones the worker handles."""


def parse_proxy_url(url: str) -> tuple[str, int]:
    """Host and port of ``grpc://host[:port]`` (port 13000 when left out).

    Raises:
        ValueError: If the URL is not a proxy URL.
    """
    parts = urlsplit(url)
    if parts.scheme != PROXY_SCHEME or not parts.hostname:
        raise ValueError(f"invalid proxy URL {without_password(url)!r}; expected grpc://host:port")
    try:
        port = DEFAULT_PROXY_PORT if parts.port is None else parts.port
    except ValueError:
        raise ValueError(f"invalid port in proxy URL {without_password(url)!r}") from None
    if not 1 <= port <= 65534:  # the coordination service listens on port + 1
        raise ValueError(
            f"invalid port in proxy URL {without_password(url)!r}: the proxy's ports are 1 to 65534"
        )
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"invalid proxy URL {without_password(url)!r}; expected grpc://host:port")
    return parts.hostname, port


class RemoteCoordinator:
    """``Coordinator`` through ``automl proxy``.

    Args:
        host: The proxy's host.
        port: The port of its Optuna storage proxy (coordination is on ``port + 1``).
    """

    def __init__(self, host: str, port: int = DEFAULT_PROXY_PORT) -> None:
        self.host, self.port = host, port
        self._channel = grpc.insecure_channel(
            f"{host}:{port + 1}", options=[*wire.CHANNEL_OPTIONS, *wire.RECONNECT_OPTIONS]
        )
        # The running trial's reads are local and its writes ride on the calls below.
        self.storage = ProxyTrialStorage(host, port, self.call)
        self.protocol = wire.PROTOCOL
        """The proxy's protocol, as far as this worker speaks it (``ping`` learns it)."""
        self.artifacts = RemoteArtifactStore(self)

    @classmethod
    def from_url(cls, url: str) -> RemoteCoordinator:
        """The coordinator of ``grpc://host:port``."""
        return cls(*parse_proxy_url(url))

    def close(self) -> None:
        """Closes both channels."""
        self._channel.close()
        self.storage.close()

    def call(
        self,
        method: str,
        header: dict[str, Any],
        payload: bytes = b"",
        timeout: float = CALL_TIMEOUT_S,
    ) -> tuple[dict[str, Any], bytes]:
        """One coordination call; raises the exception its error status stands for."""
        stub = self._channel.unary_unary(f"/{wire.SERVICE}/{method}")
        try:
            reply = stub(wire.pack(header, payload), timeout=timeout)
        except grpc.RpcError as exc:
            error = _as_exception(exc, method)
            if isinstance(error, (LeaseLostError, UpdateFinishedTrialError)):
                trial_id = self._trial_of(header)
                if trial_id is not None:
                    self.storage.forget(trial_id)  # what it holds of the trial is stale now
            raise error from None
        return wire.unpack(reply)

    def _trial_of(self, header: dict[str, Any]) -> int | None:
        """The trial a call is about: named, or run by the lease it carries."""
        if header.get("trial_id") is not None:
            return int(header["trial_id"])
        lease = header.get("lease")
        if isinstance(lease, dict) and "ticket_id" in lease and "attempt" in lease:
            return self.storage.trial_of(int(lease["ticket_id"]), int(lease["attempt"]))
        return None

    def _lease_trial(self, lease: Lease) -> int | None:
        return self.storage.trial_of(lease.ticket_id, lease.attempt)

    def ping(self, timeout: float = CALL_TIMEOUT_S) -> int:
        """Returns the proxy's protocol version once it answers.

        Raises:
            StorageUnavailableError: If the proxy does not answer.
            ProxyTooOldError: If the proxy is older than this worker's protocol.
        """
        reply, _ = self.call("ping", {}, timeout=timeout)
        protocol = int(reply.get("protocol", 1))
        if protocol < wire.OLDEST_PROTOCOL:
            raise ProxyTooOldError(
                f"automl proxy at {self.host}:{self.port} is too old for this worker; "
                "upgrade the proxy"
            )
        self.protocol = min(protocol, wire.PROTOCOL)
        return protocol

    # --- Coordinator -----------------------------------------------------------------------

    def claim(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> Lease | None:
        """See ``Coordinator.claim`` (a proxy older than ``exclude`` ignores it: the
        worker then gives such a study's ticket back)."""
        reply, _ = self.call("claim", _claim_header(worker_id, study_id, exclude))
        lease = reply["lease"]
        return None if lease is None else wire.lease_from_wire(lease)

    def heartbeat(self, lease: Lease) -> LeaseStatus:
        """See ``Coordinator.heartbeat``."""
        trial_id = self._lease_trial(lease)
        with self.storage.pending_writes(trial_id) as writes:
            header = {"lease": wire.lease_to_wire(lease), "writes": writes}
            reply, _ = self.call("heartbeat", header)
        status = LeaseStatus(
            held=reply["held"],
            study_active=reply["study_active"],
            trial_ended=reply.get("trial_ended", False),  # an older proxy does not say
        )
        if (not status.held or status.trial_ended) and trial_id is not None:
            self.storage.forget(trial_id)  # reads of an ended trial go to the proxy
        return status

    def start_trial(self, lease: Lease, template: FrozenTrial) -> int:
        """See ``Coordinator.start_trial`` (one call)."""
        return self.storage.start_trial(lease.study_id, template, lease)

    def record_params(self, lease: Lease, params: dict[str, Any]) -> None:
        """See ``Coordinator.record_params``."""
        trial_id = self._lease_trial(lease)
        if trial_id is not None:
            self.storage.raise_refusal(trial_id)
        with self.storage.pending_writes(trial_id) as writes:
            header = {"lease": wire.lease_to_wire(lease), "params": params, "writes": writes}
            self.call("record_params", header)

    def record_results(self, trial_id: int, user_attrs: dict[str, Any]) -> None:
        """See ``Coordinator.record_results``; for the running trial, buffered: the results
        travel with its next call (the tell, at the latest)."""
        if not self.storage.stage_user_attrs(trial_id, user_attrs):  # else: at once
            self.call("record_results", {"trial_id": trial_id, "user_attrs": user_attrs})

    def save_checkpoint(self, lease: Lease, blob: bytes, epoch: int) -> None:
        """See ``Coordinator.save_checkpoint``."""
        header = {"lease": wire.lease_to_wire(lease), "epoch": epoch}
        self.call("save_checkpoint", header, blob, timeout=TRANSFER_TIMEOUT_S)

    def load_checkpoint(self, lease: Lease) -> bytes | None:
        """See ``Coordinator.load_checkpoint``."""
        header = {"lease": wire.lease_to_wire(lease)}
        reply, blob = self.call("load_checkpoint", header, timeout=TRANSFER_TIMEOUT_S)
        return blob if reply["found"] else None

    def finish(self, lease: Lease, outcome: str, failure: FailureKind | None) -> None:
        """See ``Coordinator.finish``."""
        header = {
            "lease": wire.lease_to_wire(lease),
            "outcome": outcome,
            "failure": None if failure is None else failure.value,
        }
        self.call("finish", header)

    def release(
        self, lease: Lease, failure: FailureKind, error: str, *, requeue: bool = True
    ) -> bool:
        """See ``Coordinator.release``."""
        header = {
            "lease": wire.lease_to_wire(lease),
            "failure": failure.value,
            "error": error,
            "requeue": requeue,
        }
        trial_id = self._lease_trial(lease)
        with self.storage.pending_writes(trial_id) as writes:
            reply, _ = self.call("release", {**header, "writes": writes})
        if trial_id is not None:
            self.storage.forget(trial_id)  # the attempt's trial ended on the proxy
        return bool(reply["released"])

    def finish_and_settle(
        self, lease: Lease, outcome: str, failure: FailureKind | None, *, retain: bool
    ) -> bool:
        """See ``Coordinator.finish_and_settle`` (one call)."""
        header = {
            "lease": wire.lease_to_wire(lease),
            "outcome": outcome,
            "failure": None if failure is None else failure.value,
            "retain": retain,
        }
        reply, _ = self.call("finish_and_settle", header)
        return bool(reply["settled"])

    def end_if_done(self, study_id: int) -> StudyStatus | None:
        """See ``Coordinator.end_if_done``."""
        reply, _ = self.call("end_if_done", {"study_id": study_id})
        return None if reply["status"] is None else StudyStatus(reply["status"])

    def end_due_studies(self) -> None:
        """See ``Coordinator.end_due_studies``."""
        self.call("end_due_studies", {})

    def retain_weights(self, study_id: int) -> list[int]:
        """See ``Coordinator.retain_weights``."""
        reply, _ = self.call("retain_weights", {"study_id": study_id})
        return [int(number) for number in reply["removed"]]

    def outranked(
        self, study_id: int, value: float, number: int, maximize: bool, keep: int
    ) -> bool:
        """See ``Coordinator.outranked``."""
        header = {
            "study_id": study_id,
            "value": value,
            "number": number,
            "maximize": maximize,
            "keep": keep,
        }
        reply, _ = self.call("outranked", header)
        return bool(reply["outranked"])

    def claim_evaluation(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> EvaluationLease | None:
        """See ``Coordinator.claim_evaluation`` (a proxy older than ``exclude`` ignores it)."""
        reply, _ = self.call("claim_evaluation", _claim_header(worker_id, study_id, exclude))
        lease = reply["lease"]
        return None if lease is None else wire.evaluation_from_wire(lease)

    def beat_evaluation(self, lease: EvaluationLease) -> bool:
        """See ``Coordinator.beat_evaluation``. A proxy older than the call gives the claim
        the half hour it always gave one without beats: nothing to renew there (True)."""
        try:
            reply, _ = self.call("beat_evaluation", {"lease": wire.evaluation_to_wire(lease)})
        except ProxyTooOldError:
            return True
        return bool(reply["held"])

    def finish_evaluation(
        self,
        lease: EvaluationLease,
        state: EvaluationState,
        reports: Sequence[TrialTestReport],
        note: str | None,
    ) -> bool:
        """See ``Coordinator.finish_evaluation`` (in the proxy's protocol now: it may have
        been upgraded, or rolled back, since this worker started)."""
        self.ping()
        header = {
            "lease": wire.evaluation_to_wire(lease),
            "state": state.value,
            "reports": [wire.report_to_wire(report, self.protocol) for report in reports],
            "note": note,
        }
        reply, _ = self.call("finish_evaluation", header, timeout=TRANSFER_TIMEOUT_S)
        return bool(reply["stored"])

    def claim_refit(
        self, worker_id: str, study_id: int | None, exclude: Collection[int] = ()
    ) -> RefitLease | None:
        """See ``Coordinator.claim_refit`` (a proxy older than ``exclude`` ignores it)."""
        reply, _ = self.call("claim_refit", _claim_header(worker_id, study_id, exclude))
        lease = reply["lease"]
        return None if lease is None else wire.refit_from_wire(lease)

    def beat_refit(self, lease: RefitLease) -> bool:
        """See ``Coordinator.beat_refit``."""
        reply, _ = self.call("beat_refit", {"lease": wire.refit_to_wire(lease)})
        return bool(reply["held"])

    def release_refit(self, lease: RefitLease) -> bool:
        """See ``Coordinator.release_refit`` (a proxy older than the call raises
        ``ProxyTooOldError``: the claim then goes stale as it did before)."""
        reply, _ = self.call("release_refit", {"lease": wire.refit_to_wire(lease)})
        return bool(reply["released"])

    def finish_refit(
        self, lease: RefitLease, state: RefitState, result: RefitResult | None, note: str | None
    ) -> bool:
        """See ``Coordinator.finish_refit``."""
        header = {
            "lease": wire.refit_to_wire(lease),
            "state": state.value,
            "result": None if result is None else result.to_json(),
            "note": note,
        }
        reply, _ = self.call("finish_refit", header, timeout=TRANSFER_TIMEOUT_S)
        return bool(reply["stored"])

    def spec(self, study_id: int) -> StudySpec:
        """See ``Coordinator.spec``."""
        reply, _ = self.call("spec", {"study_id": study_id})
        return StudySpec.model_validate(reply["spec"])

    def status(self, study_id: int) -> StudyStatus | None:
        """See ``Coordinator.status``."""
        reply, _ = self.call("status", {"study_id": study_id})
        return None if reply["status"] is None else StudyStatus(reply["status"])

    def fail_without_optuna_study(self, study_id: int) -> bool:
        """See ``Coordinator.fail_without_optuna_study`` (a proxy older than the call
        raises ``ProxyTooOldError``)."""
        reply, _ = self.call("fail_without_optuna_study", {"study_id": study_id})
        return bool(reply["failed"])


class RemoteArtifactStore:
    """Optuna's artifact-store protocol through the proxy (the proxy's store keeps them).

    Args:
        coordinator: The connected coordinator whose channel carries the calls.
    """

    def __init__(self, coordinator: RemoteCoordinator) -> None:
        self._coordinator = coordinator

    def open_reader(self, artifact_id: str) -> BinaryIO:
        """The artifact's bytes (read whole); raises ``ArtifactNotFound`` if missing."""
        _, blob = self._coordinator.call(
            "artifact_read", {"artifact_id": artifact_id}, timeout=TRANSFER_TIMEOUT_S
        )
        return io.BytesIO(blob)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        """Stores the whole content under ``artifact_id``."""
        self._coordinator.call(
            "artifact_write",
            {"artifact_id": artifact_id},
            content_body.read(),
            timeout=TRANSFER_TIMEOUT_S,
        )

    def remove(self, artifact_id: str) -> None:
        """Deletes the artifact; raises ``ArtifactNotFound`` if it is missing."""
        self._coordinator.call("artifact_remove", {"artifact_id": artifact_id})


def _claim_header(worker_id: str, study_id: int | None, exclude: Collection[int]) -> dict[str, Any]:
    header: dict[str, Any] = {"worker_id": worker_id, "study_id": study_id}
    if exclude:
        header["exclude"] = sorted(exclude)
    return header


def _as_exception(exc: grpc.RpcError, method: str) -> Exception:
    code = exc.code()  # type: ignore[attr-defined]
    kind, message = wire.parse_error_details(exc.details())  # type: ignore[attr-defined]
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return StorageUnavailableError(f"proxy unavailable: {message or code.name}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return ProxyTooOldError(
            f"automl proxy lacks the call {method!r}: it is too old for this worker; "
            "upgrade the proxy"
        )
    if kind == wire.LEASE_LOST:
        return LeaseLostError(message)
    if kind == wire.STUDY_NOT_FOUND and message.isdigit():
        return StudyNotFoundError(int(message))
    if kind == wire.ARTIFACT_NOT_FOUND:
        return ArtifactNotFound(message)
    if kind == wire.ARTIFACT_DAMAGED:
        return ArtifactDamagedError(message)
    if kind == wire.TRIAL_FINISHED:
        return UpdateFinishedTrialError(message)
    if kind == wire.UNREADABLE_STUDY:
        study_id, _, problem = message.partition(" ")
        if study_id.isdigit():
            return UnreadableStudyError(int(study_id), problem)
    return RemoteCallError(f"proxy: {code.name}: {message}")


__all__ = [
    "DEFAULT_PROXY_PORT",
    "ProxyTooOldError",
    "RemoteArtifactStore",
    "RemoteCallError",
    "RemoteCoordinator",
    "is_proxy_url",
    "parse_proxy_url",
]
