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
            raise CliError(
                f"cannot listen on {host}:{port}: {bind_problem(exc, flag)}", EXIT_FAILURE
            ) from None


def bind_problem(exc: OSError, flag: str = "--port", host_flag: str = "--host") -> str:
    """Why binding failed, with the option to change: the port's when it is taken, the
    host's when the address is not this machine's (``EADDRNOTAVAIL``).

    Args:
        exc: The error of ``bind``.
        flag: The option that chose the port.
        host_flag: The option that chose the host.
    """
    if exc.errno == errno.EADDRINUSE:
        return f"the port is in use (choose another with {flag})"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{reason}: no interface of this machine has it (choose another with {host_flag})"
    return f"{reason} (choose another with {flag})"
