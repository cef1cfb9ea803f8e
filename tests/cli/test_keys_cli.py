"""``automl keys``, ``serve`` on a reachable address without keys, and ``--url`` with a key."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from automl.cli.main import main
from automl.store import open_store
from automl.store.keys import authenticate, create_key, list_keys
from tests.cli.local_store import isolate_cli
from tests.cli.test_cli import Run, one_error_line
from tests.conftest import free_port, tiny_spec_data, wait_healthy
from tests.forked import ForkedProcess


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> None:
    """The CLI on a fresh SQLite file, with no ``AUTOML_*`` setting from outside."""
    isolate_cli(monkeypatch, sqlite_url, tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """Runs ``main(args)``; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_create_prints_the_secret_once_and_list_never_shows_it(
    cli: Run, sqlite_url: str, tmp_path: Path
) -> None:
    code, out, err = cli("keys", "create", "--project", "vision", "--label", "ci")

    assert code == 0, err
    token = out.strip()
    assert len(out.splitlines()) == 1 and token.startswith("automl_")
    assert "cannot be shown again" in err
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:
        principal = authenticate(store, token)
        assert principal is not None and (principal.project, principal.admin) == ("vision", False)
        [key] = list_keys(store)
    finally:
        store.close()
    secret = token.split("_", 2)[2]  # the secret itself may hold "_"
    assert len(secret) == 43
    for listing in (cli("keys", "list"), cli("keys", "list", "--json")):
        assert listing[0] == 0, listing[2]
        assert key.key_id in listing[1] and "vision" in listing[1]
        assert secret not in listing[1] + listing[2]
    shown = json.loads(cli("keys", "list", "--json")[1])
    [listed] = shown["data"]
    assert shown["count"] == 1  # a scripting tester: a bare list, unlike every other list
    assert (listed["label"], listed["admin"], listed["active"]) == ("ci", False, True)
    assert listed["created_at"].endswith("Z") and listed["revoked_at"] is None


def test_revoke_ends_a_key_for_good(cli: Run, sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:
        key, token = create_key(store, "vision", admin=True)

        code, out, err = cli("keys", "revoke", key.key_id)

        assert code == 0, err
        assert f"revoked key {key.key_id}" in out
        assert authenticate(store, token) is None
    finally:
        store.close()
    [listed] = json.loads(cli("keys", "list", "--json")[1])["data"]
    assert listed["active"] is False and listed["revoked_at"] is not None
    assert "revoked" in cli("keys", "list")[1]
    again = cli("keys", "revoke", key.key_id)
    assert again[0] == 2
    assert one_error_line(again[2]) == f"error: key {key.key_id} is already revoked"
    unknown = cli("keys", "revoke", "0123456789abcdef")
    assert unknown[0] == 2
    assert one_error_line(unknown[2]) == "error: no key '0123456789abcdef'"


def test_revoke_takes_the_whole_token_and_never_repeats_its_secret(
    cli: Run, sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    try:
        key, token = create_key(store, "vision")
        secret = token.split("_", 2)[2]  # the secret itself may hold "_"
        assert len(secret) == 43

        code, out, err = cli("keys", "revoke", token)

        assert code == 0, err
        assert f"revoked key {key.key_id}" in out
        assert authenticate(store, token) is None
        again = cli("keys", "revoke", token)
        assert again[0] == 2 and secret not in again[1] + again[2]
        mistyped = cli("keys", "revoke", token[:-1])
        assert mistyped[0] == 2 and secret[:-1] not in mistyped[1] + mistyped[2]
        assert "not a key" in one_error_line(mistyped[2])
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--project", "no spaces"), "invalid project 'no spaces'"),
        # Found by a security review: a trailing newline passed the pattern's "$", making
        # a project that printed as another's ("beta\n/name" in the dashboard).
        (("--project", "beta\n"), "invalid project 'beta\\n'"),
        (("--project", "p", "--label", "x" * 300), "--label is longer than 256 characters"),
    ],
)
def test_create_refuses_bad_input_in_one_line(
    cli: Run, args: tuple[str, ...], message: str
) -> None:
    code, out, err = cli("keys", "create", *args)

    assert code == 2
    assert message in one_error_line(err)
    assert out == ""
    assert json.loads(cli("keys", "list", "--json")[1]) == {"data": [], "count": 0}


def test_serve_refuses_a_reachable_host_without_keys(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.append(kwargs))

    code, _, err = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))

    assert code == 2
    line = one_error_line(err)
    assert "refusing to serve on 0.0.0.0 without API keys" in line
    assert "AUTOML_ALLOW_ANONYMOUS=true" in line
    assert served == []
    assert cli("serve", "--port", str(free_port()))[0] == 0, "loopback needs no key"
    assert len(served) == 1 and served[0]["access_log"] is True
    assert cli("serve", "--port", str(free_port()), "--no-access-log")[0] == 0
    assert served[1]["access_log"] is False  # a busy API's one line per request, off


def test_serve_on_a_reachable_host_with_consent_or_a_key(
    cli: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: served.append(kwargs))
    monkeypatch.setenv("AUTOML_ALLOW_ANONYMOUS", "true")

    with caplog.at_level(logging.WARNING, logger="automl.cli"):
        code, _, err = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))

    assert code == 0, err
    assert [r.message for r in caplog.records if "AUTOML_ALLOW_ANONYMOUS" in r.message]
    monkeypatch.delenv("AUTOML_ALLOW_ANONYMOUS")
    caplog.clear()
    store = open_store(sqlite_url, artifacts_dir=tmp_path / "artifacts")
    create_key(store, "vision")
    store.close()
    with caplog.at_level(logging.WARNING, logger="automl.cli"):
        code, _, err = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert code == 0, err
    assert not caplog.records
    assert len(served) == 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ``automl serve`` (forked: ``tests.forked``) whose store holds a key of project
    ``vision``; (url, key)."""
    storage = f"sqlite:///{tmp_path / 'served.db'}"
    store = open_store(storage, artifacts_dir=tmp_path / "served-artifacts")
    _, token = create_key(store, "vision")
    store.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOML_")}
    env.update(AUTOML_STORAGE=storage, AUTOML_ARTIFACTS_DIR=str(tmp_path / "served-artifacts"))
    log = tmp_path / "serve.log"
    command = ["--log-level", "WARNING", "serve", "--port", str(port)]
    process = ForkedProcess(command, env, log, cwd=tmp_path, new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log.read_text)
        yield url, token
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_url_commands_send_the_api_key(
    cli: Run, server: tuple[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, token = server
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_data()), encoding="utf-8")

    refused = cli("status", "--url", url)
    assert refused[0] == 2
    assert "API key required" in one_error_line(refused[2])
    monkeypatch.setenv("AUTOML_API_KEY", token)
    code, out, err = cli("submit", str(spec), "--url", url, "--json")
    assert code == 0, err
    study = json.loads(out)
    assert study["project"] == "vision"
    code, out, err = cli("status", "--url", url, "--json")
    assert code == 0, err
    assert [s["id"] for s in json.loads(out)["data"]] == [study["id"]]
    monkeypatch.setenv("AUTOML_API_KEY", token[:-1] + ("A" if token[-1] != "A" else "B"))
    wrong = cli("status", str(study["id"]), "--url", url)
    assert wrong[0] == 2
    assert "invalid API key" in one_error_line(wrong[2])
    assert httpx.get(f"{url}/health").status_code == 200
