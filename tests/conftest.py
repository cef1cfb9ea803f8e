"""Shared fixtures: real SQLite and PostgreSQL storages and tiny, fast study specs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import sqlalchemy

from automl.data import forget_loaded
from automl.spec import StudySpec, validate_spec
from automl.store import Store, normalize_url, open_store

if TYPE_CHECKING:
    from automl.proxy import RemoteCoordinator

MAX_TEST_PROCESSES = 4
"""``-n auto`` (pyproject's addopts, pytest-xdist): one test process per CPU, at most this
many. Each runs tests that start servers and workers of their own, and PostgreSQL's
default 100 connections are shared by them all."""

LEFT_BEHIND_IS_FINE = frozenset(
    {".pytest_cache", "__pycache__", ".ruff_cache", ".hypothesis", ".benchmarks"}
)
"""What tools leave in the checkout beside the tests (pytest's cache and plugins' folders,
bytecode, ruff's cache)."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """How many test processes ``-n auto`` starts (``PYTEST_XDIST_AUTO_NUM_WORKERS``, if
    set, decides instead; ``-n 0`` runs the suite in one process)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_TEST_PROCESSES))


@pytest.fixture(autouse=True)
def _own_working_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test runs in an empty folder of its own: what the commands and processes it
    starts write by default (``automl.db``, ``automl-artifacts``, ``automl-cache``) stays
    there, not in the checkout, where the tests running beside it would share it."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="session", autouse=True)
def _out_of_the_checkout(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[None]:
    """Moves the test process out of the folder pytest was started in, so that module
    fixtures, which run before a test's own folder is set, write there neither; fails the
    run if something was left in the checkout all the same (a process given it as its
    working folder)."""
    started_in, checkout = Path.cwd(), pytestconfig.rootpath
    before = set(os.listdir(checkout))
    os.chdir(tmp_path_factory.mktemp("session"))
    try:
        yield
    finally:
        os.chdir(started_in)
    added = sorted(set(os.listdir(checkout)) - before - LEFT_BEHIND_IS_FINE)
    if added:
        pytest.fail(f"tests left {added} in {checkout}: give their processes a folder")


POSTGRES_ENV = "AUTOML_TEST_POSTGRES_URL"


def _postgres_server_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return normalize_url(url)
    if os.environ.get("CI"):
        pytest.fail(f"{POSTGRES_ENV} must be set in CI (.ci/run sets it)")
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (skips locally without the env var)."""
    server = _postgres_server_url()
    if server is None:
        pytest.skip(f"{POSTGRES_ENV} not set")
    name = f"automl_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.engine.make_url(server).set(database=name).render_as_string(False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'automl.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn: the same contract must hold on both."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)


def store_at(url: str, tmp_path: Path) -> Store:
    """Opens the store at ``url``, with the default artifact store for its backend
    (a folder under ``tmp_path`` on SQLite, the SQL table on PostgreSQL)."""
    return open_store(url, artifacts_dir=tmp_path / "artifacts")


@pytest.fixture
def store(storage_url: str, tmp_path: Path) -> Iterator[Store]:
    """An open store on each backend."""
    opened = store_at(storage_url, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(sqlite_url: str, tmp_path: Path) -> Iterator[Store]:
    """An open SQLite store (for tests that need only one backend)."""
    opened = store_at(sqlite_url, tmp_path)
    yield opened
    opened.close()


def tiny_spec_data(**overrides: Any) -> dict[str, Any]:
    """A digits study that trains in well under a second per trial."""
    data: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"source": "digits"},
        "objective": {"metric": "accuracy"},
        "budget": {"n_trials": 3, "max_failed": 1},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "fixed": {"epochs": 1, "width": 8, "depth": 1, "batch_size": 128},
        "params": {
            "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        },
    }
    data.update(overrides)
    return data


@pytest.fixture
def tiny_spec() -> Callable[..., StudySpec]:
    """Factory of tiny validated specs; keyword arguments replace top-level fields."""

    def make(**overrides: Any) -> StudySpec:
        return validate_spec(tiny_spec_data(**overrides))

    return make


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port P such that P and P + 1 are both free right now (``automl proxy`` takes both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports")


@pytest.fixture
def proxy(store: Store) -> Iterator[RemoteCoordinator]:
    """An ``automl proxy`` on the store (no reaper: tests reap explicitly) and a client."""
    from automl.proxy import ProxyServer, RemoteCoordinator

    server = ProxyServer(store, "127.0.0.1", free_port_pair(), threads=4, reap_interval=None)
    server.start()
    client = RemoteCoordinator("127.0.0.1", server.port)
    yield client
    client.close()
    server.stop(grace=0)


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    output: Callable[[], str],
    timeout_s: float = 90.0,
    path: str = "/health",
) -> None:
    """Waits until ``GET {url}{path}`` answers 200; fails early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode}:\n{output()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url}{path} did not answer 200 within {timeout_s}s:\n{output()}")


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``AUTOML_DATA_ROOT`` and ``AUTOML_CACHE_DIR`` in the test's folder, memory cleared."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("AUTOML_DATA_ROOT", str(root))
    monkeypatch.setenv("AUTOML_CACHE_DIR", str(tmp_path / "cache"))
    forget_loaded()
    yield root.resolve()
    forget_loaded()


@contextmanager
def recorded_statements(*engines: sqlalchemy.engine.Engine) -> Iterator[list[str]]:
    """The SQL statements ``engines`` run meanwhile (an engine given twice counts once)."""
    run: list[str] = []
    distinct = list({id(engine): engine for engine in engines}.values())

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        run.append(statement)

    for engine in distinct:
        sqlalchemy.event.listen(engine, "before_cursor_execute", record)
    try:
        yield run
    finally:
        for engine in distinct:
            sqlalchemy.event.remove(engine, "before_cursor_execute", record)
