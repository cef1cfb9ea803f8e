"""The API's ``/docs`` page: a pinned Swagger UI release whose files the browser checks
(subresource integrity), under a Content-Security-Policy."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from automl.api import create_app
from automl.api.docs_page import SCRIPT_INTEGRITY, STYLE_INTEGRITY
from automl.config import SWAGGER_UI_VERSION, Settings
from tests.api.conftest import close_client, make_client, served_in_thread
from tests.chromium import render_page
from tests.conftest import free_port

TAMPERED_BUNDLE = """
window.SwaggerUIBundle = function () {
  document.body.insertAdjacentHTML("beforeend", '<p id="tampered">ran</p>');
};
window.SwaggerUIBundle.presets = {apis: null};
"""
"""What a compromised CDN could serve: it would run with the API's origin."""


def test_the_page_pins_the_release_and_names_each_files_digest(
    sqlite_url: str, tmp_path: Path
) -> None:
    client = make_client(sqlite_url, tmp_path / "artifacts")
    try:
        response = client.get("/docs")
        redoc = client.get("/redoc")
    finally:
        close_client(client)

    assert response.status_code == 200
    page = response.text
    base = f"https://cdn.jsdelivr.net/npm/swagger-ui-dist@{SWAGGER_UI_VERSION}"
    assert f'src="{base}/swagger-ui-bundle.js"\n  integrity="{SCRIPT_INTEGRITY}"' in page
    assert f'href="{base}/swagger-ui.css"\n  integrity="{STYLE_INTEGRITY}"' in page
    assert "swagger-ui-dist@5/" not in page  # no floating major release
    assert "fastapi.tiangolo.com" not in page  # no third-party favicon either
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert f"script-src {base}/swagger-ui-bundle.js 'sha256-" in policy  # that file only
    assert f"style-src {base}/swagger-ui.css 'unsafe-inline'" in policy
    assert "connect-src 'self'" in policy
    assert redoc.status_code == 404  # its page loaded unpinned files too


def test_a_path_prefix_and_a_mirror(sqlite_url: str, tmp_path: Path) -> None:
    """Behind a proxy's path prefix the page asks for the prefixed document; a mirror
    (a machine without internet) is the one script origin allowed."""
    app = create_app(
        Settings(
            storage=sqlite_url,
            artifacts_dir=tmp_path / "artifacts",
            docs_assets_url="https://mirror.example/swagger/",
        )
    )
    client = TestClient(app, root_path="/automl")
    try:
        response = client.get("/docs")
    finally:
        close_client(client)

    assert '"url": "/automl/openapi.json"' in response.text
    assert 'src="https://mirror.example/swagger/swagger-ui-bundle.js"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src https://mirror.example/swagger/swagger-ui-bundle.js 'sha256-" in policy


@pytest.mark.parametrize(
    "url",
    [
        "cdn.example/swagger",
        "https://x.example/a b",
        "https://x.example/'; script-src *",
        "//evil.example/x",
        "https://x.example/a?b",
    ],
)
def test_an_assets_url_that_would_change_the_page_or_its_policy_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match=r"must be an http\(s\) URL or a path"):
        Settings(docs_assets_url=url)


class _Assets(http.server.SimpleHTTPRequestHandler):
    """Serves a folder with the CORS header a CDN sends (``crossorigin`` files need it)."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tampered_assets(tmp_path: Path) -> Iterator[str]:
    """A mirror whose ``swagger-ui-bundle.js`` is not the release's."""
    folder = tmp_path / "assets"
    folder.mkdir()
    (folder / "swagger-ui-bundle.js").write_text(TAMPERED_BUNDLE)
    (folder / "swagger-ui.css").write_text("body { color: red }")
    handler = functools.partial(_Assets, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked-control"])
def test_a_browser_runs_no_script_but_the_release(
    sqlite_url: str,
    tmp_path: Path,
    tampered_assets: str,
    checked: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real browser refuses the tampered script; the control, the same page and policy
    without the digest, runs it and the page's own start script (so the digest is what
    stops it, and the policy lets the start script run)."""
    if not checked:
        monkeypatch.setattr("automl.api.docs_page.SCRIPT_INTEGRITY", "")
    settings = Settings(
        storage=sqlite_url, artifacts_dir=tmp_path / "artifacts", docs_assets_url=tampered_assets
    )
    app = create_app(settings)
    port = free_port()
    try:
        with served_in_thread(app, port):
            dom, _ = render_page(f"http://127.0.0.1:{port}/docs", tmp_path, wait_ms=3000)
    finally:
        app.state.store.close()

    assert ('id="tampered"' in dom) is not checked
