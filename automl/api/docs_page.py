"""The API's documentation page (``/docs``): Swagger UI of a pinned release, whose files
the browser checks against their SHA-384 before it runs them (subresource integrity).

FastAPI's own page loads the newest ``swagger-ui-dist@5`` from a CDN unchecked: whatever
the CDN serves runs with the API's origin, where it can call every route the visitor's
browser may. Here the release is fixed, each file's digest is in the page, and a
Content-Security-Policy lets the page run that script and its own inline start only.
``AUTOML_DOCS_ASSETS_URL`` points the page at a mirror of the same release (a machine
without internet); the digests stay, so a mirror must serve the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse

SCRIPT_INTEGRITY = "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+"
STYLE_INTEGRITY = "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc"
"""SHA-384 of ``swagger-ui-bundle.js`` and ``swagger-ui.css`` of swagger-ui-dist
``automl.config.SWAGGER_UI_VERSION``, as npm publishes them (its tarball; jsDelivr serves
those bytes). A new release: new digests (``openssl dgst -sha384 -binary FILE | base64``)."""


def docs_page(request: Request, openapi_url: str, title: str, assets_url: str) -> HTMLResponse:
    """The Swagger UI page for the API's OpenAPI document.

    Args:
        request: The request (its ``root_path``: the API behind a path prefix).
        openapi_url: The document's path in the app.
        title: The page's title.
        assets_url: Base URL of the swagger-ui-dist files.
    """
    root = request.scope.get("root_path", "").rstrip("/")
    base = assets_url.rstrip("/")
    config = {
        "url": root + openapi_url,
        "dom_id": "#swagger-ui",
        "layout": "BaseLayout",
        "deepLinking": True,
        "validatorUrl": None,  # no badge fetched from swagger.io for each page
    }
    # "<" escaped: no "</script>" in a path prefix can end the script early.
    options = json.dumps(config).replace("<", "\\u003c")
    start = (
        f"window.ui = SwaggerUIBundle(Object.assign({options}, "
        "{presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]}));"
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{html.escape(base)}/swagger-ui.css"
  integrity="{STYLE_INTEGRITY}" crossorigin="anonymous">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{html.escape(base)}/swagger-ui-bundle.js"
  integrity="{SCRIPT_INTEGRITY}" crossorigin="anonymous"></script>
<script>{start}</script>
</body>
</html>
"""
    return HTMLResponse(page, headers={"Content-Security-Policy": _policy(base, start)})


def _policy(assets_url: str, start: str) -> str:
    """Scripts: the release's one file and the page's own start script (by its digest);
    styles: its one style sheet (and the inline styles Swagger UI sets on its elements)."""
    script, style = (
        _source(assets_url, "swagger-ui-bundle.js"),
        _source(assets_url, "swagger-ui.css"),
    )
    digest = base64.b64encode(hashlib.sha256(start.encode()).digest()).decode()
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {script} 'sha256-{digest}'",
            f"style-src {style} 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",  # the document, and "Try it out" on this API
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _source(assets_url: str, name: str) -> str:
    """The CSP source of one file: its exact URL (not the whole CDN, which serves every
    npm package), or ``'self'`` for a path of this server."""
    parts = urlsplit(assets_url)
    return f"{assets_url}/{name}" if parts.netloc else "'self'"


__all__ = ["SCRIPT_INTEGRITY", "STYLE_INTEGRITY", "docs_page"]
