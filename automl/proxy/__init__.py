"""``automl proxy``: many workers, few database connections (see ``server`` and ``client``).

Workers point ``AUTOML_STORAGE`` at ``grpc://host:port``; the proxy holds the database
connections, serves Optuna's gRPC storage proxy for the trials and automl's coordination
service (claims, leases, checkpoints, artifacts) beside it, and runs the reaper.
"""

from automl.proxy.client import (
    DEFAULT_PROXY_PORT,
    ProxyTooOldError,
    RemoteArtifactStore,
    RemoteCallError,
    RemoteCoordinator,
    is_proxy_url,
    parse_proxy_url,
)
from automl.proxy.server import CoordinationService, ProxyError, ProxyServer

__all__ = [
    "DEFAULT_PROXY_PORT",
    "CoordinationService",
    "ProxyError",
    "ProxyServer",
    "ProxyTooOldError",
    "RemoteArtifactStore",
    "RemoteCallError",
    "RemoteCoordinator",
    "is_proxy_url",
    "parse_proxy_url",
]
