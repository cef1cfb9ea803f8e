"""``automl proxy``: one process that holds the database connections for many workers.

It serves two gRPC endpoints side by side:

- on ``port``, Optuna's own gRPC storage proxy (``optuna.storages.run_grpc_proxy_server``)
  for the trials themselves (create, suggest, report, tell), which workers reach through
  ``optuna.storages.GrpcStorageProxy``;
- on ``port + 1``, automl's coordination service: every ``Coordinator`` call (claim,
  heartbeat, checkpoint, finish, release, settle, test-split evaluations, refits) and the
  artifact store, each run by a ``SqlCoordinator`` on the database, so claims stay one
  conditional write and the budget stays exact however many workers share the proxy;
  also the worker's running trial: its creation, the writes it buffers (applied in one
  transaction, only while it is RUNNING) and its tell (see ``automl.store.trial_buffer``).
  A call that carries writes and changes the trial's or ticket's state (tell, release)
  applies them first, then the change in a second transaction; both check the trial is
  RUNNING under its row lock, and the writes are upserts, so a repeat is harmless.

The proxy also runs the reaper (its workers hold no database connection to run their own).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import socket
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import run_grpc_proxy_server
from optuna.trial import TrialState

from automl.proxy import wire
from automl.proxy.trials import template_from_wire
from automl.spec_reading import PROXY, UnreadableStudyError, check_readable
from automl.store import (
    ArtifactDamagedError,
    EvaluationState,
    FailureKind,
    LeaseLostError,
    Reaper,
    RefitState,
    Store,
    StudyNotFoundError,
    is_transient,
    remove_quietly,
    writes_from_json,
)
from automl.store.faults import first_line
from automl.store.lean_cache import LeanTrialCache
from automl.store.study_caches import StudyCaches
from automl.store.study_reads import stored_spec_text
from automl.worker.coordinator import SqlCoordinator

logger = logging.getLogger("automl.proxy")

# Optuna's gRPC proxy is experimental; automl pins its use with tests instead of a warning.
warnings.filterwarnings(
    "ignore", category=optuna.exceptions.ExperimentalWarning, message=r".*grpc|.*Grpc"
)

Handler = Callable[[dict[str, Any], bytes], tuple[dict[str, Any], bytes]]

PROXY_CACHED_STUDIES = 64
"""Studies whose finished trials the proxy keeps in memory for all its workers, unless
``automl proxy --cached-studies`` says otherwise."""

READY_TIMEOUT_S = 15.0


class ProxyError(RuntimeError):
    """The proxy could not start (a port is taken, or a server did not come up)."""


class CoordinationService:
    """The coordination methods, each a ``Handler`` over a ``SqlCoordinator``.

    Args:
        coordinator: The coordinator on the database.
    """

    def __init__(self, coordinator: SqlCoordinator) -> None:
        self.coordinator = coordinator
        self.handlers: dict[str, Handler] = {
            "ping": lambda header, _: ({"protocol": wire.PROTOCOL}, b""),
            "claim": self._claim,
            "heartbeat": self._heartbeat,
            "record_trial": self._record_trial,
            "record_params": self._record_params,
            "record_results": self._record_results,
            "create_trial": self._create_trial,
            "write_trial": self._write_trial,
            "tell_trial": self._tell_trial,
            "finish_and_settle": self._finish_and_settle,
            "save_checkpoint": self._save_checkpoint,
            "load_checkpoint": self._load_checkpoint,
            "finish": self._finish,
            "release": self._release,
            "end_if_done": self._end_if_done,
            "end_due_studies": self._end_due_studies,
            "retain_weights": self._retain_weights,
            "outranked": self._outranked,
            "claim_evaluation": self._claim_evaluation,
            "beat_evaluation": self._beat_evaluation,
            "finish_evaluation": self._finish_evaluation,
            "claim_refit": self._claim_refit,
            "beat_refit": self._beat_refit,
            "release_refit": self._release_refit,
            "finish_refit": self._finish_refit,
            "spec": self._spec,
            "status": self._status,
            "fail_without_optuna_study": self._fail_without_optuna_study,
            "artifact_read": self._artifact_read,
            "artifact_write": self._artifact_write,
            "artifact_remove": self._artifact_remove,
        }

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """The gRPC handler of every method (raw bytes in and out, see ``wire``)."""
        methods = {
            name: grpc.unary_unary_rpc_method_handler(self._wrap(name, handler))
            for name, handler in self.handlers.items()
        }
        return grpc.method_handlers_generic_handler(wire.SERVICE, methods)

    def _wrap(self, name: str, handler: Handler) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                header, payload = wire.unpack(request)
            except (ValueError, UnicodeDecodeError) as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, wire.ERROR, str(exc))
            try:
                reply, blob = handler(header, payload)
            except LeaseLostError as exc:
                _abort(context, grpc.StatusCode.FAILED_PRECONDITION, wire.LEASE_LOST, str(exc))
            except StudyNotFoundError as exc:
                study = str(exc.study_id)
                _abort(context, grpc.StatusCode.NOT_FOUND, wire.STUDY_NOT_FOUND, study)
            except ArtifactNotFound as exc:
                _abort(context, grpc.StatusCode.NOT_FOUND, wire.ARTIFACT_NOT_FOUND, str(exc))
            except ArtifactDamagedError as exc:
                code = grpc.StatusCode.DATA_LOSS
                _abort(context, code, wire.ARTIFACT_DAMAGED, str(exc))
            except UpdateFinishedTrialError as exc:
                code = grpc.StatusCode.FAILED_PRECONDITION
                _abort(context, code, wire.TRIAL_FINISHED, str(exc))
            except UnreadableStudyError as exc:
                code = grpc.StatusCode.FAILED_PRECONDITION
                _abort(context, code, wire.UNREADABLE_STUDY, f"{exc.study_id} {exc.problem}")
            except Exception as exc:
                if is_transient(exc):
                    message = first_line(exc)
                    _abort(context, grpc.StatusCode.UNAVAILABLE, wire.UNAVAILABLE, message)
                logger.exception("coordination call %s failed", name)
                message = f"{type(exc).__name__}: {exc}"
                _abort(context, grpc.StatusCode.INTERNAL, wire.ERROR, message)
            return wire.pack(reply, blob)

        return call

    # --- the methods ---------------------------------------------------------------------------

    def _claim(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = self.coordinator.claim(
            header["worker_id"], header.get("study_id"), _excluded(header)
        )
        return {"lease": None if lease is None else wire.lease_to_wire(lease)}, b""

    def _heartbeat(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = wire.lease_from_wire(header["lease"])
        status = self.coordinator.heartbeat(lease, writes_from_json(header.get("writes")))
        reply = {"held": status.held, "study_active": status.study_active}
        return {**reply, "trial_ended": status.trial_ended}, b""

    def _record_trial(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = wire.lease_from_wire(header["lease"])
        self.coordinator.record_trial(lease, int(header["trial_id"]), int(header["number"]))
        return {}, b""

    def _record_params(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        self.coordinator.record_params(
            wire.lease_from_wire(header["lease"]),
            header["params"],
            writes_from_json(header.get("writes")),
        )
        return {}, b""

    def _record_results(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        self.coordinator.record_results(
            int(header["trial_id"]),
            dict(header["user_attrs"]),
            writes_from_json(header.get("writes")),
        )
        return {}, b""

    def _create_trial(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        template = template_from_wire(header["template"])
        lease = header.get("lease")
        trial_id, number = self.coordinator.create_trial(
            int(header["study_id"]),
            template,
            None if lease is None else wire.lease_from_wire(lease),
        )
        return {"trial_id": trial_id, "number": number}, b""

    def _write_trial(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        self.coordinator.write_trials(writes_from_json(header.get("writes")))
        return {}, b""

    def _tell_trial(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        values = header.get("values")
        updated = self.coordinator.tell_trial(
            int(header["trial_id"]),
            TrialState[header["state"]],
            None if values is None else [float(v) for v in values],
            writes_from_json(header.get("writes")),
        )
        return {"updated": updated}, b""

    def _finish_and_settle(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        failure = header.get("failure")
        settled = self.coordinator.finish_and_settle(
            wire.lease_from_wire(header["lease"]),
            header["outcome"],
            None if failure is None else FailureKind(failure),
            retain=bool(header.get("retain")),
        )
        return {"settled": settled}, b""

    def _save_checkpoint(
        self, header: dict[str, Any], payload: bytes
    ) -> tuple[dict[str, Any], bytes]:
        lease = wire.lease_from_wire(header["lease"])
        self.coordinator.save_checkpoint(lease, payload, int(header["epoch"]))
        return {}, b""

    def _load_checkpoint(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        blob = self.coordinator.load_checkpoint(wire.lease_from_wire(header["lease"]))
        return {"found": blob is not None}, blob or b""

    def _finish(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        failure = header.get("failure")
        self.coordinator.finish(
            wire.lease_from_wire(header["lease"]),
            header["outcome"],
            None if failure is None else FailureKind(failure),
        )
        return {}, b""

    def _release(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        released = self.coordinator.release(
            wire.lease_from_wire(header["lease"]),
            FailureKind(header["failure"]),
            header["error"],
            requeue=bool(header["requeue"]),
            writes=writes_from_json(header.get("writes")),
        )
        return {"released": released}, b""

    def _end_if_done(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        status = self.coordinator.end_if_done(int(header["study_id"]))
        return {"status": None if status is None else status.value}, b""

    def _end_due_studies(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        self.coordinator.end_due_studies()
        return {}, b""

    def _retain_weights(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        return {"removed": self.coordinator.retain_weights(int(header["study_id"]))}, b""

    def _outranked(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        outranked = self.coordinator.outranked(
            int(header["study_id"]),
            float(header["value"]),
            int(header["number"]),
            bool(header["maximize"]),
            int(header["keep"]),
        )
        return {"outranked": outranked}, b""

    def _claim_evaluation(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = self.coordinator.claim_evaluation(
            header["worker_id"], header.get("study_id"), _excluded(header)
        )
        return {"lease": None if lease is None else wire.evaluation_to_wire(lease)}, b""

    def _beat_evaluation(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = wire.evaluation_from_wire(header["lease"])
        return {"held": self.coordinator.beat_evaluation(lease)}, b""

    def _finish_evaluation(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        stored = self.coordinator.finish_evaluation(
            wire.evaluation_from_wire(header["lease"]),
            EvaluationState(header["state"]),
            [wire.report_from_wire(report) for report in header["reports"]],
            header.get("note"),
        )
        return {"stored": stored}, b""

    def _claim_refit(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = self.coordinator.claim_refit(
            header["worker_id"], header.get("study_id"), _excluded(header)
        )
        return {"lease": None if lease is None else wire.refit_to_wire(lease)}, b""

    def _beat_refit(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        return {"held": self.coordinator.beat_refit(wire.refit_from_wire(header["lease"]))}, b""

    def _release_refit(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        lease = wire.refit_from_wire(header["lease"])
        return {"released": self.coordinator.release_refit(lease)}, b""

    def _finish_refit(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        stored = self.coordinator.finish_refit(
            wire.refit_from_wire(header["lease"]),
            RefitState(header["state"]),
            wire.refit_result_from_wire(header.get("result")),
            header.get("note"),
        )
        return {"stored": stored}, b""

    def _spec(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        study_id = int(header["study_id"])
        text = stored_spec_text(self.coordinator.store, study_id)
        # The worker checks its own registries and version; here only what the proxy's
        # automl reads. The stored text goes on unchanged (a dump would add the fields of
        # the proxy's version, which an older worker takes for a newer automl's study).
        check_readable(study_id, text, reader=PROXY, entries=False)
        return {"spec": json.loads(text)}, b""

    def _status(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        status = self.coordinator.status(int(header["study_id"]))
        return {"status": None if status is None else status.value}, b""

    def _fail_without_optuna_study(
        self, header: dict[str, Any], _: bytes
    ) -> tuple[dict[str, Any], bytes]:
        return {"failed": self.coordinator.fail_without_optuna_study(int(header["study_id"]))}, b""

    def _artifact_read(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        with self.coordinator.artifacts.open_reader(str(header["artifact_id"])) as reader:
            return {}, reader.read()

    def _artifact_write(
        self, header: dict[str, Any], payload: bytes
    ) -> tuple[dict[str, Any], bytes]:
        self.coordinator.artifacts.write(str(header["artifact_id"]), io.BytesIO(payload))
        return {}, b""

    def _artifact_remove(self, header: dict[str, Any], _: bytes) -> tuple[dict[str, Any], bytes]:
        artifact_id = str(header["artifact_id"])
        if header.get("quietly"):
            remove_quietly(self.coordinator.artifacts, artifact_id)
        else:
            self.coordinator.artifacts.remove(artifact_id)
        return {}, b""


def _excluded(header: dict[str, Any]) -> list[int]:
    """The studies a claim leaves to others (none from a worker older than ``exclude``)."""
    return [int(study_id) for study_id in header.get("exclude", ())]


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, kind: str, msg: str) -> NoReturn:
    context.abort(code, wire.error_details(kind, msg))
    raise AssertionError("unreachable")  # context.abort raises


class ProxyServer:
    """Both endpoints and the reaper, started together.

    Args:
        store: The open store (the proxy's database connections).
        host: Interface to listen on.
        port: Port of Optuna's storage proxy; coordination listens on ``port + 1``.
        threads: Threads serving each endpoint (concurrent calls in flight).
        grace: Seconds without heartbeat after which a worker counts as lost.
        reap_interval: Seconds between reaper passes (None: no reaper).
        cached_studies: Studies whose finished trials it keeps in memory, the ones its
            workers read most recently: a worker reading a study past them waits while
            the proxy reads the whole study again.
    """

    def __init__(
        self,
        store: Store,
        host: str = "127.0.0.1",
        port: int = 13000,
        *,
        threads: int = 32,
        grace: float = 60.0,
        reap_interval: float | None = 15.0,
        cached_studies: int = PROXY_CACHED_STUDIES,
    ) -> None:
        self.store, self.host, self.port = store, host, port
        self.threads = threads
        self.optuna_storage = StudyCaches(
            lambda: LeanTrialCache(store), store.storage, capacity=cached_studies
        )
        """What Optuna's storage proxy serves: the database, with a cache per study."""
        self.grace, self.reap_interval = grace, reap_interval
        self._server: grpc.Server | None = None
        self._reaper: Reaper | None = None

    @property
    def coordination_port(self) -> int:
        """Where the coordination service listens."""
        return self.port + 1

    def start(self) -> ProxyServer:
        """Starts both endpoints and the reaper; returns once both answer.

        Raises:
            ProxyError: If a port is taken or a server does not come up.
        """
        self.check_ports(self.host, self.port)
        optuna_proxy = threading.Thread(
            target=run_grpc_proxy_server,
            # A cached storage (as Optuna's docs ask): finished trials are read once, without
            # their bulky attributes, so a worker's sync costs what changed, not the study's
            # size; one cache per study, so that memory does not grow with every study served.
            args=(self.optuna_storage,),
            kwargs={
                "host": self.host,
                "port": self.port,
                "thread_pool": ThreadPoolExecutor(self.threads),
            },
            name="automl-optuna-proxy",
            daemon=True,
        )
        optuna_proxy.start()
        server = grpc.server(ThreadPoolExecutor(self.threads), options=wire.CHANNEL_OPTIONS)
        service = CoordinationService(
            SqlCoordinator(self.store, reader=PROXY, grace_period=self.grace)
        )
        server.add_generic_rpc_handlers((service.generic_handler(),))
        if server.add_insecure_port(f"{self.host}:{self.coordination_port}") == 0:
            where = f"{self.host}:{self.coordination_port} (the coordination port: --port + 1)"
            raise ProxyError(f"cannot listen on {where}")
        server.start()
        self._server = server
        for port in (self.port, self.coordination_port):
            _wait_ready(self.host, port)
        if self.reap_interval is not None:
            self._reaper = Reaper(self.store, self.grace, self.reap_interval).start()
        logger.info(
            "proxy on %s: Optuna storage on port %d, coordination on port %d",
            self.host,
            self.port,
            self.coordination_port,
        )
        return self

    @staticmethod
    def check_ports(host: str, port: int) -> None:
        """Raises ``ProxyError`` unless ``port`` and ``port + 1`` are free on ``host``."""
        _check_free(host, port, "")
        _check_free(host, port + 1, " (the coordination port: --port + 1)")

    def stop(self, grace: float = 5.0) -> None:
        """Stops the coordination endpoint and the reaper (Optuna's ends with the process)."""
        if self._reaper is not None:
            self._reaper.stop()
        if self._server is not None:
            self._server.stop(grace).wait()


def _check_free(host: str, port: int, role: str) -> None:
    """Raises ``ProxyError`` unless ``host:port`` can be bound; ``role`` says what the
    port is for, in the message."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ProxyError(f"cannot listen on {host}:{port}{role}: {_bind_hint(exc)}") from None


def _bind_hint(exc: OSError) -> str:
    """Why a port cannot be bound, and which option to change."""
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{exc.strerror}: no interface of this machine has it (choose another with --host)"
    # The proxy takes --port and the port after it: another --port moves both.
    return f"{exc.strerror} (choose another --port; the proxy listens on it and on the next)"


def _wait_ready(host: str, port: int) -> None:
    target = f"{_connect_host(host)}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise ProxyError(f"the server on {target} did not come up") from None


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


__all__ = ["CoordinationService", "ProxyError", "ProxyServer"]
