"""A worker's Optuna storage through ``automl proxy``: few round trips per trial.

Through Optuna's ``GrpcStorageProxy`` alone, every suggested param, report, attribute and
read of the running trial is its own round trip (about 15 per trial). The worker's
running trial is kept as a local copy and its writes travel with the coordination calls
(``automl.store.trial_buffer``); everything else goes through ``GrpcStorageProxy``, one
client per study (``automl.store.study_caches``).
"""

from __future__ import annotations

from optuna.storages import BaseStorage, GrpcStorageProxy

from automl.proxy.wire import ProxyTooOldError
from automl.store.study_caches import StudyCaches
from automl.store.trial_buffer import (
    BufferedTrialStorage,
    Call,
    template_from_wire,
    template_to_wire,
)


class ProxyTrialStorage(BufferedTrialStorage):
    """Optuna storage of a worker behind ``automl proxy``.

    Args:
        host: The proxy's host.
        port: The port of its Optuna storage.
        call: The coordination call (``RemoteCoordinator.call``).
    """

    # A proxy too old for a call refused the call, not its writes.
    not_refusals = (ProxyTooOldError,)

    def __init__(self, host: str, port: int, call: Call) -> None:
        self._client = GrpcStorageProxy(host=host, port=port)
        self.caches = StudyCaches(
            lambda: GrpcStorageProxy(host=host, port=port), self._client, close=_close_client
        )
        """A client (a channel, and its cache of finished trials) per study."""
        super().__init__(self.caches, call)

    def close(self) -> None:
        """Closes the gRPC channels of the Optuna storage."""
        self.caches.close()
        self._client.close()


def _close_client(client: BaseStorage) -> None:
    if isinstance(client, GrpcStorageProxy):
        client.close()


__all__ = ["ProxyTrialStorage", "template_from_wire", "template_to_wire"]
