"""Whether the API may listen where it would: no keys on a reachable address needs consent.

While no API key exists, a loopback API is open to the local user (``automl run``,
``automl up`` on a laptop). On any other address ``automl serve`` refuses to start unless
``AUTOML_ALLOW_ANONYMOUS=true``, and then it logs a warning. The app itself refuses
anonymous requests there too (``Settings.keys_required``), so revoking the last key
later does not open it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from automl.cli.errors import EXIT_BAD_INPUT, CliError
from automl.config import Settings, is_loopback

if TYPE_CHECKING:
    from automl.store import Store

logger = logging.getLogger("automl.cli")


def check_exposure(settings: Settings, store: Store) -> None:
    """Refuses to serve anonymously on a non-loopback host unless allowed (then warns).

    Raises:
        CliError: No active key, a non-loopback host and ``allow_anonymous`` unset.
    """
    from automl.store.keys import keys_exist

    if is_loopback(settings.host) or keys_exist(store):
        return
    if settings.keys_required:
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
