"""A worker's Optuna storage through ``automl proxy``: few round trips per trial.

Through Optuna's ``GrpcStorageProxy`` alone, every suggested param, report, attribute and
read of the running trial is its own round trip (about 15 per trial). The worker's
running trial is kept as a local copy and its writes travel with the coordination calls
(``automl.store.trial_buffer``); everything else goes through ``GrpcStorageProxy``.
"""

from __future__ import annotations

from optuna.storages import GrpcStorageProxy

from automl.proxy.wire import ProxyTooOldError
from automl.store.trial_buffer import (
    BufferedTrialStorage,
    Call,
    template_from_wire,
    template_to_wire,
)


class ProxyTrialStorage(BufferedTrialStorage):
    """Optuna storage of a worker behind ``automl proxy``.

    Args:
        backend: Optuna's gRPC storage client of the proxy.
        call: The coordination call (``RemoteCoordinator.call``).
    """

    # A proxy too old for a call refused the call, not its writes.
    not_refusals = (ProxyTooOldError,)

    def __init__(self, backend: GrpcStorageProxy, call: Call) -> None:
        super().__init__(backend, call)
        self.grpc_backend = backend

    def close(self) -> None:
        """Closes the gRPC channel of the Optuna storage."""
        self.grpc_backend.close()


__all__ = ["ProxyTrialStorage", "template_from_wire", "template_to_wire"]
