"""Proxies as an older automl serves them, for the tests of mixed versions."""

from __future__ import annotations

from typing import Any

import pytest

from automl.proxy import ProxyServer
from automl.proxy import server as server_module
from automl.store import Store
from tests.conftest import free_port_pair

LATER_CALLS = ("beat_evaluation",)
"""Calls added since protocol 4 without a new version: older proxies answer UNIMPLEMENTED."""


def proxy_of_protocol(store: Store, monkeypatch: pytest.MonkeyPatch, protocol: int) -> ProxyServer:
    """A started proxy on ``store`` whose ``ping`` answers ``protocol`` and which lacks the
    ``LATER_CALLS`` (stop it after)."""
    plain = server_module.CoordinationService.__init__

    def older(self: server_module.CoordinationService, coordinator: Any) -> None:
        plain(self, coordinator)
        for method in LATER_CALLS:
            del self.handlers[method]
        self.handlers["ping"] = lambda header, _: ({"protocol": protocol}, b"")

    monkeypatch.setattr(server_module.CoordinationService, "__init__", older)
    server = ProxyServer(store, "127.0.0.1", free_port_pair(), threads=2, reap_interval=None)
    return server.start()
