"""A worker's Optuna storage through ``automl proxy``: few round trips per trial.

Through Optuna's ``GrpcStorageProxy`` alone, every suggested param, report, attribute and
read of the running trial is its own round trip (about 15 per trial). The worker's
running trial is kept as a local copy and its writes travel with the coordination calls
(``automl.store.trial_buffer``); everything else goes through ``GrpcStorageProxy``.
"""

from __future__ import annotations

from optuna.storages import BaseStorage, GrpcStorageProxy

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

    def use_backend(self, backend: BaseStorage, untracked: BaseStorage | None = None) -> None:
        """See ``BufferedTrialStorage.use_backend``; closes the old gRPC client's channel.

        Args:
            backend: A new ``GrpcStorageProxy``.
            untracked: Must be None (the proxy's client takes every write).
        """
        if not isinstance(backend, GrpcStorageProxy) or untracked is not None:
            raise TypeError("a proxy's trial storage takes a GrpcStorageProxy only")
        old, self.grpc_backend = self.grpc_backend, backend
        super().use_backend(backend)
        old.close()


__all__ = ["ProxyTrialStorage", "template_from_wire", "template_to_wire"]
