"""Writes that a web page of another site makes a browser send are refused (403): without
API keys, any page open in a browser on the API's machine could otherwise submit, cancel
or delete studies, or write annotation CSVs (found by a tester: a ``text/plain`` form
post created a study)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import tiny_spec_data

SPEC = tiny_spec_data(name="origin")
HOST = "testserver"  # what TestClient sends as Host


def _studies(client: TestClient) -> int:
    return int(client.get("/studies").json()["count"])


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed frames, some redirects
        {"Origin": f"http://{HOST}.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["other-site", "null", "look-alike", "fetch-metadata"],
)
def test_a_write_from_another_sites_page_is_refused(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post("/studies", json=SPEC, headers=headers)

    assert response.status_code == 403
    assert response.json()["detail"].startswith("cross-")
    assert _studies(client) == 0  # nothing written


def test_a_text_plain_form_post_from_another_site_is_refused(client: TestClient) -> None:
    """The request a page can send without asking (no CORS preflight)."""
    created = client.post("/studies", json=SPEC).json()["id"]
    for path, body in ((f"/studies/{created}/cancel", b""), ("/studies", b"{}")):
        response = client.post(
            path,
            content=body,
            headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
        )
        assert response.status_code == 403, path
    assert client.get(f"/studies/{created}").json()["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # the CLI, curl, scripts
        {"Origin": f"http://{HOST}"},  # the API's own pages (/docs)
        {"Origin": "https://automl.example", "X-Forwarded-Host": "automl.example"},
        {"Sec-Fetch-Site": "same-origin"},
    ],
    ids=["no-browser", "own-page", "behind-a-proxy", "same-origin"],
)
def test_writes_from_clients_and_the_apis_own_pages_pass(
    client: TestClient, headers: dict[str, str]
) -> None:
    assert client.post("/studies", json=SPEC, headers=headers).status_code == 201


def test_reads_from_any_page_pass(client: TestClient) -> None:
    """A page of another site cannot read the answer (no CORS): refusing gains nothing."""
    assert client.get("/studies", headers={"Origin": "https://evil.example"}).status_code == 200
