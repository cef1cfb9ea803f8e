"""Checking that the API's address is free before any server starts on it."""

from __future__ import annotations

import errno
import socket

from automl.cli.errors import EXIT_FAILURE, CliError


def require_free_port(host: str, port: int, flag: str = "--port") -> None:
    """Binds ``host:port`` once and lets it go, as uvicorn is about to bind it.

    ``SO_REUSEADDR`` is set as uvicorn sets it, so a port whose last connections linger
    in TIME_WAIT counts as free while one that another server listens on does not.

    Args:
        host: The address to listen on.
        port: The port.
        flag: The option that chose the port, named in the error.

    Raises:
        CliError: If the address cannot be bound (in use, not this machine's, no right).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc}", EXIT_FAILURE) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            reason = (
                "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            )
            raise CliError(
                f"cannot listen on {host}:{port}: {reason} (choose another with {flag})",
                EXIT_FAILURE,
            ) from None
