"""Refusing requests that a web page of another site makes a browser send.

Without API keys the API trusts whoever reaches it (a loopback address by default), and a
browser on that machine reaches it too: any web page could make it submit a study, cancel
or delete one, or write an annotation CSV with a plain form post or ``fetch`` (requests
that need no CORS permission, and whose answer the page never needs to read). Browsers
name the page's origin on such requests (``Origin``, and ``Sec-Fetch-Site``); other
clients (the CLI, curl, scripts) send neither. A request that changes something and comes
from another site's page is refused (403) before it reaches a route; so is, on a
loopback API, any request under a host name that is not loopback (DNS rebinding).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from automl.config import is_loopback
from automl.origin_rules import SAFE_METHODS, cross_site_refusal, host_name


class SameOriginWrites:
    """Refuses writes (``POST``, ``DELETE``...) that a browser sends for a page of another
    origin: its ``Origin`` names another host than the request's ``Host`` (or the
    ``X-Forwarded-Host`` a reverse proxy sets), or is ``null``, or ``Sec-Fetch-Site``
    says ``cross-site``. The API's own pages (``/docs``) are of its origin.

    An API that listens on a loopback address also refuses every request that arrives
    over loopback under a ``Host`` that is not a loopback name: a web page whose own name
    was made to resolve to 127.0.0.1 (DNS rebinding) is of the same origin as what it
    reaches, and its browser sends it no ``Origin`` on reads, so it could read everything.

    Args:
        app: The ASGI app it wraps.
        loopback: Whether the API listens on a loopback address only.
    """

    def __init__(self, app: ASGIApp, loopback: bool = False) -> None:
        self.app = app
        self.loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers 403 to a cross-site write or a rebound request; passes the rest on."""
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            refusal = None
            if self.loopback and _over_loopback(scope):
                refusal = rebound_refusal(headers)
            if refusal is None and scope["method"] not in SAFE_METHODS:
                refusal = cross_site_refusal(headers)
            if refusal is not None:
                await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _over_loopback(scope: Scope) -> bool:
    """Whether the request came from this machine over a loopback address (all requests
    to a loopback-bound server do; an in-process client has no address)."""
    client = scope.get("client")
    return client is not None and is_loopback(str(client[0]))


def rebound_refusal(headers: Headers) -> str | None:
    """Why a request to a loopback-only API names a host that is not loopback (a rebound
    DNS name, or a reverse proxy that passes the public name on), or None."""
    host = host_name(headers.get("host", ""))
    if host is not None and is_loopback(host):
        return None
    return (
        f"request for host {host or headers.get('host', '')!r} refused: this API listens on "
        "a loopback address and answers as localhost, 127.0.0.1 or [::1] only (another "
        "name that resolves here is DNS rebinding; behind a reverse proxy, send Host as "
        "the loopback address and the public name in X-Forwarded-Host)"
    )
