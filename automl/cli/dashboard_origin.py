"""The dashboard's answer to requests that a web page of another site makes a browser send.

optuna-dashboard has no login: whoever reaches it reads every project's studies and
weights, and writes notes and studies. On loopback only this machine reaches it, but a
browser on this machine does too: a page whose own name was made to resolve to 127.0.0.1
(DNS rebinding) is of the same origin as what it reaches, so it could read everything and
write at will. The dashboard therefore answers only under the host names it was told
(loopback names by default, wherever it listens on loopback), and refuses writes that a
page of another origin sends, as the API does (``automl.origin_rules``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from automl.config import is_loopback
from automl.origin_rules import SAFE_METHODS, cross_site_refusal, host_name

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CHECKED_HEADERS = ("host", "origin", "sec-fetch-site", "x-forwarded-host")
"""The request headers the checks read."""


def allowed_host_names(option: str | None, listen_host: str) -> frozenset[str] | None:
    """The host names (besides loopback ones) the dashboard answers under; None: any.

    Args:
        option: ``--allowed-hosts``: comma-separated names, ``*`` for any; None for the
            default (loopback names only on a loopback address, any name elsewhere).
        listen_host: The address the dashboard listens on.

    Raises:
        ValueError: If ``option`` names no host or a malformed one.
    """
    if option is None:
        return frozenset() if is_loopback(listen_host) else None
    names = [name.strip() for name in option.split(",") if name.strip()]
    if not names:
        raise ValueError("--allowed-hosts names no host (use '*' for any)")
    if "*" in names:
        return None
    hosts = {name: _option_host(name) for name in names}
    bad = [name for name, host in hosts.items() if host is None]
    if bad:
        raise ValueError(f"--allowed-hosts: {bad[0]!r} is not a host name")
    return frozenset(str(host) for host in hosts.values())


def _option_host(name: str) -> str | None:
    """A name of ``--allowed-hosts`` as ``Host`` headers name it (lower case, no trailing
    dot, an IPv6 address with or without brackets), its port dropped; None if malformed
    (user information, a path, a malformed address)."""
    bare = name.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if "@" in name or "/" in name:
        return None
    found = host_name(name)
    return _normal(found) if found and _is_host_name(found) else None


def _normal(name: str) -> str:
    """A host name as compared: lower case, without a trailing dot."""
    return name.lower().rstrip(".")


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?", re.IGNORECASE)


def _is_host_name(name: str) -> bool:
    """Whether ``name`` is a DNS name or an IP address (as a ``Host`` header names them)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return _HOST_NAME.fullmatch(name) is not None
    return True


def same_site_only(app: WSGIApp, allowed_hosts: frozenset[str] | None) -> WSGIApp:
    """``app`` answering 403 to a request under another host name than ``allowed_hosts``
    (and loopback names; None: any) and to a write a page of another origin sends."""

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = {
            name: environ[key]
            for name in CHECKED_HEADERS
            if (key := "HTTP_" + name.upper().replace("-", "_")) in environ
        }
        reason = _host_refusal(headers.get("host", ""), allowed_hosts)
        if reason is None and environ.get("REQUEST_METHOD", "GET").upper() not in SAFE_METHODS:
            reason = cross_site_refusal(headers)
        if reason is None:
            return app(environ, _without_cors(start_response))
        return json_answer(start_response, "403 Forbidden", reason)

    return checked


def _without_cors(start_response: Callable[..., Any]) -> Callable[..., Any]:
    """``start_response`` dropping ``Access-Control-Allow-Origin``: optuna-dashboard
    sends ``*`` with artifact downloads, which let a page of any other site read a
    trial's weights from whoever opens it; the dashboard's own pages need no CORS."""

    def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        kept = [(name, value) for name, value in headers if name.lower() != CORS_ORIGIN]
        return start_response(status, kept, *exc_info)

    return start


CORS_ORIGIN = "access-control-allow-origin"


def _host_refusal(host: str, allowed: frozenset[str] | None) -> str | None:
    """Why a request for ``host`` is refused, or None."""
    if allowed is None:
        return None
    name = host_name(host)
    if name is not None and (is_loopback(name) or _normal(name) in allowed):
        return None
    return (
        f"request for host {name or host!r} refused: the dashboard answers as localhost, "
        "127.0.0.1 or [::1]"
        + (f" and {', '.join(sorted(allowed))}" if allowed else "")
        + " only (another name that resolves here is DNS rebinding; `automl dashboard "
        "--allowed-hosts` names more)"
    )


def json_answer(start_response: Callable[..., Any], status: str, reason: str) -> list[bytes]:
    """Starts a JSON answer ``{"reason": ...}`` with ``status``; returns its body."""
    body = json.dumps({"reason": reason}).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
