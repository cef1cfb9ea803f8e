"""Whether the API may listen where it would: no keys on a reachable address needs consent.

While no API key exists, the API is open to anyone who reaches its port. On a loopback
address that is the local user (``automl run``, ``automl up`` on a laptop); on any other
``automl serve`` refuses to start unless ``AUTOML_ALLOW_ANONYMOUS=true``, and then it
logs a warning.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from automl.cli.errors import EXIT_BAD_INPUT, CliError
from automl.config import Settings

if TYPE_CHECKING:
    from automl.store import Store

logger = logging.getLogger("automl.cli")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (``localhost``, 127.x, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(settings: Settings, store: Store) -> None:
    """Refuses to serve anonymously on a non-loopback host unless allowed (then warns).

    Raises:
        CliError: No active key, a non-loopback host and ``allow_anonymous`` unset.
    """
    from automl.store.keys import keys_exist

    if is_loopback(settings.host) or keys_exist(store):
        return
    if not settings.allow_anonymous:
        raise CliError(
            f"refusing to serve on {settings.host} without API keys (anyone reaching the "
            "port could submit, cancel and download everything): create one with "
            "`automl keys create --project NAME`, or set AUTOML_ALLOW_ANONYMOUS=true",
            EXIT_BAD_INPUT,
        )
    logger.warning(
        "serving on %s with no API key (AUTOML_ALLOW_ANONYMOUS=true): anyone who reaches "
        "the port can submit, cancel and download every study",
        settings.host,
    )
