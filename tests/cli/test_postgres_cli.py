"""The CLI on PostgreSQL: read-only commands create no schema in a database without
automl's tables, and a database or role that is not there stops a command at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
import yaml

from automl.cli.errors import EXIT_BAD_INPUT
from automl.cli.main import main
from automl.config import Settings
from automl.store import normalize_url
from automl.url_secrets import without_password
from tests.cli.local_store import READ_ONLY_COMMANDS
from tests.conftest import free_port, tiny_spec_data, wait_healthy
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for field in Settings.model_fields:
        monkeypatch.delenv(f"AUTOML_{field.upper()}", raising=False)
    monkeypatch.chdir(tmp_path)


def _tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(normalize_url(url))
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _with(url: str, **parts: str) -> str:
    """``url`` with some of its parts (``database``, ``username``) replaced."""
    return sqlalchemy.engine.make_url(url).set(**parts).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    "command",
    READ_ONLY_COMMANDS,
)
def test_read_only_commands_create_no_schema_where_automl_has_none(
    postgres_url: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Once they created automl's 15 tables in whatever database they reached."""
    code = main([*command, "--storage", postgres_url])

    out, err = capsys.readouterr()
    assert (code, out) == (EXIT_BAD_INPUT, "")
    assert err.splitlines() == [
        f"error: no automl store at {without_password(postgres_url)} (no automl tables); "
        "submit a study or run automl serve/worker to create one"
    ]
    assert _tables(postgres_url) == []


def test_the_guard_reads_automl_storage_too(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOML_STORAGE", postgres_url)

    assert main(["status"]) == EXIT_BAD_INPUT
    assert "no automl store at" in capsys.readouterr().err
    assert _tables(postgres_url) == []


def test_commands_that_write_create_the_schema(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_data()), encoding="utf-8")

    assert main(["submit", str(spec), "--storage", postgres_url]) == 0
    assert main(["status", "--storage", postgres_url, "--json"]) == 0

    assert "automl_studies" in _tables(postgres_url)
    assert '"count": 1' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        ({"database": "automl_no_such_database"}, 'database "automl_no_such_database"'),
        ({"username": "automl_no_such_role"}, 'role "automl_no_such_role"'),
    ],
    ids=["database", "role"],
)
def test_a_worker_on_a_database_or_role_that_is_not_there_stops_at_once(
    postgres_url: str, parts: dict[str, str], says: str
) -> None:
    """Once retried forever, as if the database were restarting."""
    storage = _with(postgres_url, **parts)
    command = [sys.executable, "-m", "automl", "worker", "--storage", storage]
    env = {key: value for key, value in os.environ.items() if not key.startswith("AUTOML_")}

    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: cannot open storage ")
    assert line.endswith(f"{says} does not exist")


def test_a_read_only_command_on_a_database_that_is_not_there_is_exit_2(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = _with(postgres_url, database="automl_no_such_database")

    assert main(["status", "--storage", storage]) == EXIT_BAD_INPUT
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith('database "automl_no_such_database" does not exist')


def test_serve_waits_for_a_database_that_is_unreachable_at_start(
    postgres_url: str, tmp_path: Path
) -> None:
    # Found by exploratory testing: `automl serve` and `automl up` exited at once on a
    # database blip at start, while workers waited for it.
    server = sqlalchemy.engine.make_url(postgres_url)
    log = tmp_path / "serve.log"
    with TcpProxy(server.host or "127.0.0.1", server.port or 5432) as proxy, log.open("w") as sink:
        proxy.cut()
        port = free_port()
        command = [sys.executable, "-m", "automl", "serve", "--port", str(port)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("AUTOML_")}
        # A password in the query (trust auth ignores it) is never logged: found by a
        # security review, every retry's line repeated it.
        given = sqlalchemy.engine.make_url(proxy.url_for(postgres_url))
        given = given.update_query_dict({"password": "S3cret"})
        env["AUTOML_STORAGE"] = given.render_as_string(hide_password=False)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink, env=env)
        try:
            # Waiting on the line, not a fixed time: on a loaded machine the imports alone
            # can take longer than the outage would.
            deadline = time.monotonic() + 60
            while "storage unavailable while opening the store" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            time.sleep(1)
            assert process.poll() is None, log.read_text()  # still waiting, not exited
            proxy.restore()
            wait_healthy(f"http://127.0.0.1:{port}", process, log.read_text, timeout_s=60)
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert "password=***" in log.read_text() and "S3cret" not in log.read_text()
