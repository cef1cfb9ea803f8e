"""``automl up``: the child command lines, and a real API + worker stopped by Ctrl-C."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from automl.cli import supervisor
from automl.cli.errors import EXIT_INTERRUPTED
from automl.cli.main import build_parser, main
from automl.cli.supervisor import (
    Child,
    dashboard_child,
    resolve_gpus,
    run_children,
    serve_child,
    worker_children,
)
from automl.config import Settings
from tests.conftest import free_port, tiny_spec_data, wait_healthy
from tests.forked import ForkedProcess

STARTUP_TIMEOUT_S = 90
STUDY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings as ``automl up`` would get them from its flags."""
    return Settings(
        storage=f"sqlite:///{tmp_path / 'up.db'}",
        artifacts_dir=tmp_path / "artifacts",
        host="127.0.0.1",
        port=8123,
        device="cpu",
    )


def _value(command: list[str], flag: str) -> str:
    """The value given to ``flag`` in ``command`` (exactly once)."""
    assert command.count(flag) == 1, command
    return command[command.index(flag) + 1]


def _up_children(settings: Settings, workers: int, log_level: str) -> list[Child]:
    """The children of ``automl up --workers N`` on the CPU."""
    children = [serve_child(settings, log_level)]
    return children + (worker_children(settings, log_level, slots=workers) if workers else [])


def _up_commands(settings: Settings, workers: int, log_level: str) -> list[list[str]]:
    """The command lines of ``automl up --workers N`` on the CPU."""
    return [child.argv for child in _up_children(settings, workers, log_level)]


def test_child_commands_server_and_workers(settings: Settings) -> None:
    commands = _up_commands(settings, 3, "WARNING")

    assert len(commands) == 4
    serve, *workers = commands
    assert serve[:3] == [sys.executable, "-m", "automl"]
    assert "serve" in serve
    assert _value(serve, "--port") == "8123"
    assert _value(serve, "--host") == "127.0.0.1"
    for command in commands:
        assert command[:3] == [sys.executable, "-m", "automl"]
        assert _value(command, "--artifacts-dir") == str(settings.artifacts_dir)
        assert _value(command, "--log-level") == "WARNING"
    for worker in workers:
        assert "worker" in worker
        assert "serve" not in worker
        assert _value(worker, "--device") == "cpu"
    # Identical command lines: each worker draws its own id and per-trial seeds.
    assert workers[0] == workers[1] == workers[2]


def test_workers_share_the_cores(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl.cli.supervisor.os.cpu_count", lambda: 8)
    workers = _up_commands(settings, 3, "INFO")[1:]
    assert [_value(worker, "--threads") for worker in workers] == ["2", "2", "2"]

    many = _up_commands(settings, 16, "INFO")[1:]
    assert {_value(worker, "--threads") for worker in many} == {"1"}

    pinned = _up_commands(settings.model_copy(update={"threads": 3}), 2, "INFO")[1:]
    assert {_value(worker, "--threads") for worker in pinned} == {"3"}


def test_child_commands_without_workers(settings: Settings) -> None:
    commands = _up_commands(settings, 0, "INFO")

    assert len(commands) == 1
    assert "serve" in commands[0]


def test_the_storage_url_travels_in_the_environment_not_on_the_command_line(
    settings: Settings,
) -> None:
    """Found by a tester: the database password showed to every user of the machine in
    ``ps``, and in the log line of a worker's restart."""
    url = "postgresql://automl:Secret@db.example:5432/automl"
    with_password = settings.model_copy(update={"storage": url})
    children = _up_children(with_password, 2, "INFO")
    children += worker_children(with_password, "INFO", slots=2, slot_dir=Path("slots"))
    children.append(dashboard_child(with_password, "INFO", 8090))

    for child in children:
        assert not any("Secret" in part for part in child.argv), child.argv
        assert child.env["AUTOML_STORAGE"] == url


def test_child_commands_parse_with_the_cli_parser(settings: Settings) -> None:
    serve, *workers = _up_commands(settings, 2, "DEBUG")

    serve_args = build_parser().parse_args(serve[3:])
    worker_args = [build_parser().parse_args(worker[3:]) for worker in workers]

    assert serve_args.command == "serve"
    assert (serve_args.port, serve_args.storage) == (8123, None)  # from AUTOML_STORAGE
    assert [args.command for args in worker_args] == ["worker", "worker"]
    assert all(args.storage is None for args in worker_args)
    assert all(args.device == "cpu" for args in worker_args)
    assert all(args.log_level == "DEBUG" for args in worker_args)


def test_one_worker_per_gpu_and_slot(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("automl.cli.supervisor.os.cpu_count", lambda: 16)
    children = worker_children(
        settings, "INFO", gpus=["0", "3"], slots=2, extra=["--study", "7"], slot_dir=tmp_path
    )

    assert [child.env["CUDA_VISIBLE_DEVICES"] for child in children] == ["0", "0", "3", "3"]
    groups = [child.env["AUTOML_SLOT_GROUP"] for child in children]
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert all(Path(group).parent == tmp_path for group in groups)
    for child in children:
        args = build_parser().parse_args(child.argv[3:])
        # Each process sees only its GPU, as device 0.
        assert (args.command, args.device, args.threads, args.study) == ("worker", "cuda", 4, 7)


def test_one_slot_per_device_needs_no_gate(settings: Settings) -> None:
    storage = {"AUTOML_STORAGE": settings.storage}
    [child] = worker_children(settings, "INFO", gpus=["1"], slots=1)
    assert child.env == {**storage, "CUDA_VISIBLE_DEVICES": "1"}
    [cpu] = worker_children(settings, "INFO")
    assert cpu.env == storage  # no AUTOML_SLOT_GROUP


@pytest.mark.parametrize(
    ("visible", "asked", "expected"),
    [
        ("2,5", "all", ["2", "5"]),
        ("2,5", "5", ["5"]),
        ("GPU-a1,GPU-b2", "GPU-b2", ["GPU-b2"]),
    ],
)
def test_gpus_come_from_the_visible_devices(
    visible: str, asked: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert resolve_gpus(asked) == expected


@pytest.mark.parametrize(
    ("visible", "asked", "message"),
    [
        ("", "all", "--gpus all: no CUDA GPU is visible on this machine"),
        ("0,1", "2", "--gpus 2: no GPU 2 (visible: 0, 1)"),
        ("0,1", "0,0", "--gpus '0,0': expected 'all' or distinct ids like 0,1"),
        ("0,1", "0,", "--gpus '0,': expected 'all' or distinct ids like 0,1"),
    ],
)
def test_bad_gpus_are_one_line_errors(
    visible: str,
    asked: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["worker", "--gpus", asked, "--storage", storage]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_zero_slots_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--slots", "0", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert capsys.readouterr().err.strip() == "error: --slots must be >= 1"


def test_up_negative_workers_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["up", "--workers", "-1", "--storage", f"sqlite:///{tmp_path / 'x.db'}"])

    assert code == 2
    assert capsys.readouterr().err.strip() == "error: --workers must be >= 0"


@pytest.mark.parametrize(
    ("command", "device", "message"),
    [
        ("up", "bogus", "invalid device 'bogus'; use auto, cpu, cuda or cuda:N"),
        ("worker", "bogus", "invalid device 'bogus'; use auto, cpu, cuda or cuda:N"),
        pytest.param(
            "up",
            "cuda:0",
            "device 'cuda:0' is not available (0 CUDA devices)",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there"),
        ),
    ],
    ids=["up", "worker-slots", "up-no-gpu"],
)
def test_a_device_no_worker_could_use_is_refused_before_any_process_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, device: str, message: str
) -> None:
    """Once ``up`` started the API, its worker refused the device (exit 2), and ``up``
    stopped everything and exited 1 ("child processes exited with codes [2]")."""
    store = tmp_path / "x.db"
    argv = [command, "--device", device, "--storage", f"sqlite:///{store}"]
    argv += ["--port", str(free_port())] if command == "up" else ["--slots", "2"]

    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not store.exists()  # no server or worker opened the store


def test_children_that_refuse_their_arguments_are_exit_2(tmp_path: Path) -> None:
    """``up`` stops all when one exits: the others' SIGTERM is a clean stop, and the
    refusal (2) is what ``up`` reports, not a crash (1)."""
    refusing = _counting_child(tmp_path / "bad", [2], restart=True)
    crashing = _counting_child(tmp_path / "crash", [1], restart=False)

    assert run_children([_sleeper(), refusing], stop_all_when_one_exits=True) == 2
    assert run_children([refusing, crashing], stop_all_when_one_exits=False) == 1


# --- a real `automl up` ----------------------------------------------------------------------


class Up:
    """A running ``automl up`` in its own process group (forked: ``tests.forked``; the
    server and worker it starts are ordinary ``python -m automl`` processes)."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = f"sqlite:///{tmp_path / 'up.db'}"
        self.log = tmp_path / "up.log"
        command = ["up", "--workers", "1", "--port", str(self.port), "--storage", self.storage]
        command += ["--artifacts-dir", str(tmp_path / "artifacts"), "--device", "cpu", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTOML_POLL_INTERVAL": "0.3"}
        self.process = ForkedProcess(command, env, self.log, new_session=True)
        self.pgid = os.getpgid(self.process.pid)

    def output(self) -> str:
        """What the whole group printed so far."""
        return self.log.read_text(errors="replace")

    def wait_healthy(self) -> None:
        """Waits for GET /health."""
        wait_healthy(self.url, self.process, self.output, STARTUP_TIMEOUT_S)

    def get(self, path: str) -> Any:
        """GET ``path`` as JSON."""
        response = httpx.get(f"{self.url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def ctrl_c(self) -> int:
        """Sends SIGINT to the whole group, as a terminal does; returns up's exit code."""
        os.killpg(self.pgid, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"up did not exit {STOP_TIMEOUT_S}s after Ctrl-C:\n{self.output()}")

    def group_alive(self) -> bool:
        """Whether any process of the group is left."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """Kills whatever is left of the group."""
        if self.group_alive():
            os.killpg(self.pgid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """``automl up --workers 1`` on a fresh SQLite file, healthy."""
    service = Up(tmp_path)
    try:
        service.wait_healthy()
        yield service
    finally:
        service.kill()


def _trial_states(storage_url: str) -> list[TrialState]:
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        return [
            trial.state
            for study in storage.get_all_studies()
            for trial in storage.get_all_trials(study._study_id, deepcopy=False)
        ]
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_up_runs_a_study_and_stops_on_ctrl_c(up: Up) -> None:
    spec = tiny_spec_data(name="up", budget={"n_trials": 2, "max_failed": 0})
    response = httpx.post(f"{up.url}/studies", json=spec, timeout=30)
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]

    deadline = time.monotonic() + STUDY_TIMEOUT_S
    study = response.json()
    while study["status"] in ("queued", "running"):
        if time.monotonic() > deadline or up.process.poll() is not None:
            pytest.fail(f"study not completed: {study}\n{up.output()}")
        time.sleep(0.3)
        study = up.get(f"/studies/{study_id}")
    assert study["status"] == "completed", study
    assert study["counts"]["complete"] == 2
    assert up.get(f"/studies/{study_id}/best")["trials"][0]["state"] == "complete"

    started = time.monotonic()
    code = up.ctrl_c()

    assert code == EXIT_INTERRUPTED, up.output()  # was 0, unlike automl run's 130
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert not up.group_alive(), "a child outlived `automl up`"
    assert "Finished server process" in up.output()
    states = _trial_states(up.storage)
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert TrialState.RUNNING not in states


def _children(pid: int) -> dict[int, list[str]]:
    """Child pids of ``pid`` with their command lines (Linux /proc)."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(kid): Path(f"/proc/{kid}/cmdline").read_text().split("\0") for kid in kids}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_up_restarts_a_worker_killed_by_the_kernel(up: Up) -> None:
    [worker] = [pid for pid, argv in _children(up.process.pid).items() if "worker" in argv]

    os.kill(worker, signal.SIGKILL)  # as the out-of-memory killer would

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        workers = [pid for pid, argv in _children(up.process.pid).items() if "worker" in argv]
        if workers and workers != [worker]:
            break
        assert time.monotonic() < deadline and up.process.poll() is None, up.output()
        time.sleep(0.2)
    assert up.get("/health")
    spec = tiny_spec_data(name="after-restart", budget={"n_trials": 1, "max_failed": 0})
    study_id = httpx.post(f"{up.url}/studies", json=spec, timeout=30).json()["id"]
    deadline = time.monotonic() + STUDY_TIMEOUT_S
    while (study := up.get(f"/studies/{study_id}"))["status"] != "completed":
        assert time.monotonic() < deadline and study["status"] in ("queued", "running"), study
        time.sleep(0.3)
    assert f"child {worker} exited with code -9" in up.output()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_ctrl_c_mid_trial_leaves_no_running_trial(tmp_path: Path) -> None:
    service = Up(tmp_path)
    try:
        service.wait_healthy()
        spec = tiny_spec_data(
            name="interrupted",
            budget={"n_trials": 2, "max_failed": 2},
            fixed={"epochs": 50, "width": 128, "depth": 3, "batch_size": 1024},
        )
        response = httpx.post(f"{service.url}/studies", json=spec, timeout=30)
        assert response.status_code == 201, response.text
        study_id = response.json()["id"]
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while service.get(f"/studies/{study_id}")["counts"]["running"] == 0:
            assert time.monotonic() < deadline, service.output()
            time.sleep(0.05)
        children = _children(service.process.pid)
        [worker] = [pid for pid, argv in children.items() if "worker" in argv]
        [server] = [pid for pid, argv in children.items() if "serve" in argv]

        # Ctrl-C reaches every process of the group; here the worker handles it a moment
        # before `up` does (the order a real terminal leaves to chance).
        os.kill(worker, signal.SIGINT)
        time.sleep(0.3)
        os.kill(server, signal.SIGINT)
        os.kill(service.process.pid, signal.SIGINT)
        code = service.process.wait(timeout=STOP_TIMEOUT_S)

        assert code == EXIT_INTERRUPTED, service.output()
        assert not service.group_alive()
        assert TrialState.RUNNING not in _trial_states(service.storage), service.output()
    finally:
        service.kill()


@pytest.mark.slow
def test_worker_slots_run_trials_side_by_side_with_an_exact_budget(tmp_path: Path) -> None:
    log, trials = _run_slots(tmp_path, ["--slots", "2", "--device", "cpu"])

    assert "starting 2 worker process(es)" in log
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert len({t.user_attrs["automl.worker"] for t in trials}) == 2  # both slots took trials
    intervals = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(intervals))  # side by side


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_worker_gpus_all_runs_slots_on_every_gpu(tmp_path: Path) -> None:
    log, trials = _run_slots(tmp_path, ["--gpus", "all", "--slots", "2"])

    assert f"starting {2 * torch.cuda.device_count()} worker process(es)" in log
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6


def _run_slots(tmp_path: Path, layout: list[str]) -> tuple[str, list[FrozenTrial]]:
    """Runs a 6-trial study with ``automl worker LAYOUT --exit-when-idle``; its log and trials."""
    storage = f"sqlite:///{tmp_path / 'slots.db'}"
    spec = tiny_spec_data(
        name="slots",
        budget={"n_trials": 6, "max_failed": 0},
        fixed={"epochs": 5, "width": 8, "depth": 1, "batch_size": 64},
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert main(["submit", str(spec_file), "--storage", storage]) == 0
    command = [sys.executable, "-m", "automl", "worker", *layout, "--exit-when-idle"]
    command += ["--storage", storage, "--artifacts-dir", str(tmp_path / "a")]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    storage_ = optuna.storages.RDBStorage(storage)
    try:
        [study] = storage_.get_all_studies()
        return done.stderr, storage_.get_all_trials(study._study_id)
    finally:
        storage_.engine.dispose()


# --- optuna-dashboard as one more child ---------------------------------------------------------


def test_the_dashboard_child_runs_automl_dashboard_on_the_same_store(settings: Settings) -> None:
    command = dashboard_child(settings.model_copy(update={"host": "0.0.0.0"}), "INFO", 8090).argv
    args = build_parser().parse_args(command[3:])
    assert args.command == "dashboard"
    # On loopback even next to an API on every interface: the dashboard knows no keys.
    assert (args.dashboard_host, args.dashboard_port) == ("127.0.0.1", 8090)
    assert (args.storage, args.artifacts_dir) == (None, str(settings.artifacts_dir))
    assert dashboard_child(settings, "INFO", 8090).env == {"AUTOML_STORAGE": settings.storage}


@pytest.mark.parametrize("flags", [["--dashboard"], []], ids=["dashboard", "port-implies-it"])
def test_up_refuses_the_apis_port_for_the_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'x.db'}"
    code = main(["up", "--port", "8123", *flags, "--dashboard-port", "8123", "--storage", storage])
    assert code == 2
    assert "--dashboard-port 8123 is the API's port" in capsys.readouterr().err


@pytest.mark.slow
def test_up_with_a_dashboard_port_serves_the_dashboard_and_stops_it_on_ctrl_c(
    tmp_path: Path,
) -> None:
    dashboard_port = free_port()
    up = Up(tmp_path, "--dashboard-port", str(dashboard_port))  # implies --dashboard
    try:
        up.wait_healthy()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                meta = httpx.get(f"http://127.0.0.1:{dashboard_port}/api/meta", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or up.process.poll() is not None:
                    pytest.fail(f"the dashboard did not answer:\n{up.output()}")
                time.sleep(0.2)
        assert meta.status_code == 200
        assert meta.json()["artifact_is_available"] is True
        assert up.ctrl_c() == EXIT_INTERRUPTED, up.output()
        assert not up.group_alive(), "a child outlived `automl up`"
    finally:
        up.kill()


# --- crashes and restarts ---------------------------------------------------------------------


def _counting_child(starts: Path, codes: list[int], *, restart: bool) -> Child:
    """A child that exits with ``codes[n]`` on its n-th start (the last code from then
    on), counting its starts in ``starts``."""
    script = (
        "import pathlib, sys\n"
        f"path = pathlib.Path({str(starts)!r})\n"
        "path.write_text(path.read_text() + 'x' if path.exists() else 'x')\n"
        f"codes = {codes!r}\n"
        "sys.exit(codes[min(len(path.read_text()), len(codes)) - 1])\n"
    )
    return Child([sys.executable, "-c", script], restart=restart)


def _sleeper() -> Child:
    return Child([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_crashed_worker_is_restarted_and_the_rest_keep_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_DELAYS_S", (0.0, 0.0))
    starts = tmp_path / "starts"
    worker = _counting_child(starts, [3, 1, 0], restart=True)

    # As `automl up`: the API (here a sleeper) stops with everything once the worker
    # exits for good, which here is cleanly after two crashes.
    assert run_children([_sleeper(), worker], stop_all_when_one_exits=True) == 0
    assert starts.read_text() == "xxx"


def test_a_worker_that_keeps_crashing_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_DELAYS_S", (0.0, 0.0))
    starts, api_starts = tmp_path / "starts", tmp_path / "api-starts"
    worker = _counting_child(starts, [3], restart=True)
    api = _counting_child(api_starts, [4], restart=False)

    assert run_children([_sleeper(), worker], stop_all_when_one_exits=True) == 1
    assert starts.read_text() == "xxx"  # the first start and two restarts
    assert run_children([_sleeper(), api], stop_all_when_one_exits=True) == 1
    assert api_starts.read_text() == "x"  # the API is never restarted
    bad_input, bad_starts = _counting_child(tmp_path / "bad", [2], restart=True), tmp_path / "bad"
    assert run_children([bad_input], stop_all_when_one_exits=False) == 2
    assert bad_starts.read_text() == "x"  # exit 2 (bad input) fails the same way each time


def test_workers_are_restarted_and_the_server_and_dashboard_are_not(settings: Settings) -> None:
    assert all(child.restart for child in worker_children(settings, "INFO", slots=2))
    assert not serve_child(settings, "INFO").restart
    assert not dashboard_child(settings, "INFO", 8090).restart


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie nobody reaped has stopped all the same


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    command = ["worker", "--slots", "2", "--device", "cpu", "--poll-interval", "0.2"]
    command += ["--storage", f"sqlite:///{tmp_path / 'w.db'}", "--artifacts-dir", str(tmp_path)]
    parent = ForkedProcess(command, dict(os.environ), tmp_path / "w.log", new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while len(workers := _children(parent.pid)) < 2:
            # The child opens its log after setsid, which is all the fork waited for.
            log = (tmp_path / "w.log").read_text() if (tmp_path / "w.log").exists() else ""
            assert time.monotonic() < deadline and parent.poll() is None, log
            time.sleep(0.1)

        os.kill(parent.pid, signal.SIGKILL)

        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not all(_gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor's kill -9"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
