"""What makes a request one that a web page of another site made a browser send: shared by
the API (``automl.api.origin``) and the dashboard (``automl.cli.dashboard_origin``), so
neither the dashboard nor the thin CLI imports the API to read them."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing (reads: a page of another site cannot read the answer)."""


def cross_site_refusal(headers: Mapping[str, str]) -> str | None:
    """Why a write with these headers came from another site's page, or None if it did
    not (no browser sent it, or a page of this server did). ``headers``: lower-case names."""
    origin = headers.get("origin")
    if origin is None:
        if headers.get("sec-fetch-site") == "cross-site":
            return "cross-site request refused: writes come from this server's own pages only"
        return None
    forwarded = (headers.get("x-forwarded-host") or "").split(",")  # a chain of proxies
    hosts = {host.strip().lower() for host in (headers.get("host", ""), *forwarded)} - {""}
    if origin != "null" and _netloc(origin) in hosts:
        return None
    return (
        f"cross-origin request refused: a page of {origin} may not change anything here "
        "(behind a reverse proxy, pass the Host header on, or set X-Forwarded-Host)"
    )


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header (``localhost`` of ``localhost:8000``, ``::1`` of
    ``[::1]:8000``), or None if it is malformed."""
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


def _netloc(origin: str) -> str | None:
    """An ``Origin``'s host and port, lower case; None if it is malformed or has none."""
    try:
        return urlsplit(origin).netloc.lower() or None
    except ValueError:
        return None
