"""The dashboard refuses rebound host names and cross-site writes (``dashboard_origin``),
in process over a real store, and ``--allowed-hosts`` is read and refused as a CLI option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from automl.cli import dashboard_commands
from automl.cli.dashboard_commands import dashboard_app
from automl.cli.dashboard_origin import allowed_host_names
from automl.cli.main import main
from automl.store import Store, open_store
from tests.conftest import free_port

NOTE = {"version": 1, "body": "hello"}


@pytest.fixture
def store(sqlite_url: str, tmp_path: Path) -> Iterator[Store]:
    """A store with one plain Optuna study (id 1), whose note anyone may write."""
    opened = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    opened.storage.create_new_study([], "plain")
    yield opened
    opened.close()


def _client(store: Store, allowed: frozenset[str] | None, host: str) -> httpx.Client:
    app = dashboard_app(store, allowed)
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url=f"http://{host}:8080")


def test_a_loopback_dashboard_answers_as_loopback_names_only(store: Store) -> None:
    """Found by a tester: under any Host it served every project's studies and weights and
    took notes, so a page rebound to 127.0.0.1 could read and write all of it."""
    loopback_only = allowed_host_names(None, "127.0.0.1")

    for host in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST"):
        with _client(store, loopback_only, host) as client:
            assert client.get("/api/studies").status_code == 200, host
    with _client(store, loopback_only, "attacker.example") as client:
        read = client.get("/api/studies")
        write = client.put("/api/studies/1/note", json=NOTE)

    assert read.status_code == write.status_code == 403
    assert read.json()["reason"].startswith("request for host 'attacker.example' refused")
    assert "DNS rebinding" in read.json()["reason"]
    assert store.reader.get_study_user_attrs(1) == {}  # the note was not written


def test_named_hosts_are_answered_and_star_or_another_address_answers_any(
    store: Store,
) -> None:
    named = allowed_host_names("dash.example, other.example:8080", "0.0.0.0")

    assert named == frozenset({"dash.example", "other.example"})
    for host, status in (("dash.example", 200), ("other.example", 200), ("x.example", 403)):
        with _client(store, named, host) as client:
            assert client.get("/api/studies").status_code == status, host
    assert allowed_host_names("*", "127.0.0.1") is None
    # A reviewer: an IPv6 address lost all but its first group, user information passed.
    assert allowed_host_names("fe80::1,[fe80::2],Dash.Example.", "0.0.0.0") == frozenset(
        {"fe80::1", "fe80::2", "dash.example"}
    )
    with pytest.raises(ValueError, match=r"'user@evil\.example' is not a host name"):
        allowed_host_names("user@evil.example", "0.0.0.0")
    with _client(store, named, "dash.example.") as client:  # a trailing dot: the same name
        assert client.get("/api/studies").status_code == 200
    assert allowed_host_names(None, "0.0.0.0") is None  # it warns at start instead
    with _client(store, None, "anything.example") as client:
        assert client.get("/api/studies").status_code == 200


def test_a_write_from_a_page_of_another_origin_is_refused(store: Store) -> None:
    with _client(store, frozenset(), "127.0.0.1") as client:
        own = client.put(
            "/api/studies/1/note", json=NOTE, headers={"Origin": "http://127.0.0.1:8080"}
        )
        other = client.put(
            "/api/studies/1/note", json=NOTE, headers={"Origin": "http://evil.example"}
        )
        fetched = client.put(
            "/api/studies/1/note", json=NOTE, headers={"Sec-Fetch-Site": "cross-site"}
        )
        read = client.get("/api/studies", headers={"Origin": "http://evil.example"})

    assert own.status_code == 204
    assert other.status_code == fetched.status_code == 403
    assert "cross-origin request refused" in other.json()["reason"]
    assert read.status_code == 200  # a read's answer is not the other page's to see


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (",", "error: --allowed-hosts names no host (use '*' for any)"),
        ("a b", "error: --allowed-hosts: 'a b' is not a host name"),
    ],
)
def test_a_bad_allowed_hosts_option_is_one_error_line(
    option: str,
    message: str,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AUTOML_STORAGE", sqlite_url)
    monkeypatch.setattr(dashboard_commands._ThreadingServer, "serve_forever", lambda *args: None)

    code = main(["dashboard", "--port", str(free_port()), "--allowed-hosts", option])

    assert code == 2
    assert capsys.readouterr().err.strip() == message
