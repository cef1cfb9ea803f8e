"""The coordination protocol on the wire: one gRPC method per coordinator call.

A message is a JSON header, optionally followed by raw bytes (a checkpoint or weights):
``[4-byte big-endian header length][header JSON][payload]``. Errors travel as gRPC status
codes whose details start with a kind (``lease_lost: ...``), so the client raises the same
exceptions a worker sees on the database directly.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

from automl.store import EvaluationLease, Lease, RefitLease, RefitResult, TrialTestReport
from automl.store.jobs import job_result
from automl.worker.coordinator import CoordinatorTooOldError

SERVICE = "automl.Coordinator"
"""The gRPC service name of the coordination methods."""

MAX_MESSAGE_BYTES = 1024 * 1024 * 1024
"""Largest message either side accepts (checkpoints of large models travel whole)."""

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
]

MAX_RECONNECT_BACKOFF_MS = 5_000
"""A worker's channel tries a restarted proxy again within this: gRPC's own backoff grows
to 120 s, past the grace period after which the new proxy reaps the trials of workers
that have not beaten yet."""

RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.min_reconnect_backoff_ms", 1_000),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
]

PROTOCOL = 4
"""The coordination protocol's version, which ``ping`` answers: 2 added the running
trial's calls (``create_trial``, ``write_trial``, ``tell_trial``) and the buffered
``writes`` other calls carry; 3 made ``create_trial`` link the trial to the ``lease`` it
carries (a proxy before 3 ignores it, so a retried attempt's trial would be invisible to
the reaper) and added ``outranked``; 4 added ``most_confused`` to test reports (a worker
leaves it out for a proxy of 3, which refuses fields it does not know; from 4 a proxy
leaves out the fields it does not know). A proxy without it answers ``ping`` with no
version."""

OLDEST_PROTOCOL = 3
"""The oldest proxy this worker runs on."""


class ProxyTooOldError(CoordinatorTooOldError):
    """The proxy lacks a call this worker needs: it runs an older automl."""


LEASE_LOST = "lease_lost"
STUDY_NOT_FOUND = "study_not_found"
ARTIFACT_NOT_FOUND = "artifact_not_found"
ARTIFACT_DAMAGED = "artifact_damaged"
TRIAL_FINISHED = "trial_finished"
UNREADABLE_STUDY = "unreadable_study"
UNAVAILABLE = "unavailable"
ERROR = "error"

_LENGTH = struct.Struct(">I")


def pack(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One message: the JSON header, then the payload bytes."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return _LENGTH.pack(len(encoded)) + encoded + payload


def unpack(message: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and payload of a message made by ``pack``.

    Raises:
        ValueError: If the message is not one ``pack`` made.
    """
    if len(message) < _LENGTH.size:
        raise ValueError("message too short")
    (length,) = _LENGTH.unpack_from(message)
    end = _LENGTH.size + length
    if end > len(message):
        raise ValueError("header longer than the message")
    header = json.loads(message[_LENGTH.size : end])
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, message[end:]


def lease_to_wire(lease: Lease) -> dict[str, Any]:
    """A lease as a JSON object."""
    return dataclasses.asdict(lease)


def lease_from_wire(data: dict[str, Any]) -> Lease:
    """The lease that ``lease_to_wire`` wrote."""
    return Lease(**data)


def evaluation_to_wire(lease: EvaluationLease) -> dict[str, Any]:
    """An evaluation claim as a JSON object."""
    return dataclasses.asdict(lease)


def evaluation_from_wire(data: dict[str, Any]) -> EvaluationLease:
    """The evaluation claim that ``evaluation_to_wire`` wrote."""
    return EvaluationLease(**{**data, "trials": tuple(data["trials"])})


def refit_to_wire(lease: RefitLease) -> dict[str, Any]:
    """A refit claim as a JSON object."""
    return dataclasses.asdict(lease)


def refit_from_wire(data: dict[str, Any]) -> RefitLease:
    """The refit claim that ``refit_to_wire`` wrote."""
    return RefitLease(**data)


def refit_result_from_wire(data: dict[str, Any] | None) -> RefitResult | None:
    """The refit result that ``RefitResult.to_json`` wrote (None stays None)."""
    return None if data is None else RefitResult.from_json(data)


def report_to_wire(report: TrialTestReport, protocol: int = PROTOCOL) -> dict[str, Any]:
    """A trial's test-split report as a JSON object, as a proxy of ``protocol`` reads it."""
    data = dataclasses.asdict(report)
    if protocol < 4:
        del data["most_confused"]
    return data


def report_from_wire(data: dict[str, Any]) -> TrialTestReport:
    """The report that ``report_to_wire`` wrote (fields this automl does not know, which a
    newer worker sends, are left out)."""
    return job_result(TrialTestReport, data)


def error_details(kind: str, message: str) -> str:
    """The details string of an error status."""
    return f"{kind}: {message}"


def parse_error_details(details: str | None) -> tuple[str, str]:
    """The kind and message of an error status's details (``error`` if unknown)."""
    kind, sep, message = (details or "").partition(": ")
    if not sep:
        return ERROR, details or ""
    return kind, message
