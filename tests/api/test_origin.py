"""Requests that a web page makes a browser send are refused (403) where they could act
for the page: writes from another site's page (without API keys, any page open in a
browser on the API's machine could otherwise submit, cancel or delete studies, or write
annotation CSVs: found by a tester, a ``text/plain`` form post created a study), and on a
loopback API any browser request under a host name that is not loopback (DNS rebinding:
the page's own name made to resolve to 127.0.0.1, found by a reviewer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from automl.api import create_app
from automl.config import Settings
from tests.conftest import tiny_spec_data

SPEC = tiny_spec_data(name="origin")
HOST = "127.0.0.1:8000"


@pytest.fixture
def local(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The API as ``automl serve`` runs it by default: on a loopback address, no keys."""
    app = create_app(Settings(storage=sqlite_url, artifacts_dir=tmp_path / "artifacts"))
    with TestClient(app, base_url=f"http://{HOST}", client=("127.0.0.1", 50123)) as client:
        yield client
    app.state.store.close()


def _studies(client: TestClient) -> int:
    return int(client.get("/studies").json()["count"])


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed frames, some redirects
        {"Origin": f"http://{HOST}.evil.example"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["other-site", "null", "look-alike", "other-port", "fetch-metadata"],
)
def test_a_write_from_another_sites_page_is_refused(
    local: TestClient, headers: dict[str, str]
) -> None:
    response = local.post("/studies", json=SPEC, headers=headers)

    assert response.status_code == 403
    assert response.json()["detail"].startswith("cross-")
    assert _studies(local) == 0  # nothing written


def test_a_text_plain_form_post_from_another_site_is_refused(local: TestClient) -> None:
    """The request a page can send without asking (no CORS preflight)."""
    created = local.post("/studies", json=SPEC).json()["id"]
    for path, body in ((f"/studies/{created}/cancel", b""), ("/studies", b"{}")):
        response = local.post(
            path,
            content=body,
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
        )
        assert response.status_code == 403, path
    assert local.get(f"/studies/{created}").json()["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # the CLI, curl, scripts
        {"Origin": f"http://{HOST}"},  # the API's own pages (/docs)
        {"Origin": "https://automl.example", "X-Forwarded-Host": "automl.example"},
        {"Origin": "https://automl.example", "X-Forwarded-Host": "automl.example, edge"},
        {"Sec-Fetch-Site": "same-origin"},
    ],
    ids=["no-browser", "own-page", "behind-a-proxy", "behind-proxies", "same-origin"],
)
def test_writes_from_clients_and_the_apis_own_pages_pass(
    local: TestClient, headers: dict[str, str]
) -> None:
    assert local.post("/studies", json=SPEC, headers=headers).status_code == 201


def test_reads_from_another_sites_page_pass(local: TestClient) -> None:
    """A page of another site cannot read the answer (no CORS): refusing gains nothing."""
    assert local.get("/studies", headers={"Origin": "https://evil.example"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),  # a browser sends a same-origin read no Origin (found by a reviewer)
        ("GET", {"Sec-Fetch-Site": "same-origin"}),
        ("POST", {"Origin": "http://evil.example:8000"}),
    ],
    ids=["read", "read-fetch-metadata", "write"],
)
def test_a_loopback_api_refuses_requests_under_a_rebound_name(
    local: TestClient, method: str, headers: dict[str, str]
) -> None:
    """The page at evil.example:8000, its name resolving to 127.0.0.1, is same-origin
    with what it reaches: it could read and write at will, were the name not refused."""
    rebound = {"Host": "evil.example:8000", **headers}
    response = local.request(method, "/studies", json=SPEC, headers=rebound)

    assert response.status_code == 403
    assert response.json()["detail"].startswith("request for host 'evil.example' refused")
    assert _studies(local) == 0


@pytest.mark.parametrize("host", ["localhost:8000", "LOCALHOST", "127.0.0.1", "[::1]:8000"])
def test_a_loopback_api_answers_its_loopback_names(local: TestClient, host: str) -> None:
    response = local.get("/studies", headers={"Host": host, "Origin": f"http://{host}"})
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["[::1", "[evil]:80"])
def test_a_malformed_host_is_refused_not_a_crash(local: TestClient, host: str) -> None:
    response = local.post("/studies", json=SPEC, headers={"Host": host, "Origin": "http://x"})
    assert response.status_code == 403


def test_an_api_on_a_public_address_takes_browsers_under_its_names(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        storage=sqlite_url, artifacts_dir=tmp_path / "a", host="0.0.0.0", allow_anonymous=True
    )
    app = create_app(settings)
    with TestClient(app, base_url="http://automl.example") as client:
        own = {"Origin": "http://automl.example"}
        assert client.post("/studies", json=SPEC, headers=own).status_code == 201
    app.state.store.close()
