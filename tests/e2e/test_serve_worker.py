"""End to end: a real ``automl serve`` and a real ``automl worker`` on one SQLite file
(processes forked from one that imported the CLI: see ``tests.forked``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, tiny_spec_data, wait_healthy
from tests.forked import ForkedProcess

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 60
STUDY_TIMEOUT_S = 240


def _start(args: list[str], log: Path) -> ForkedProcess:
    return ForkedProcess(["--log-level", "INFO", *args], {**os.environ}, log)


def _stop(process: ForkedProcess) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, ForkedProcess, Path]]:
    """A real API server and one real worker process, started together on a fresh file."""
    port = free_port()
    common = ["--storage", f"sqlite:///{tmp_path / 'e2e.db'}", "--artifacts-dir", str(tmp_path)]
    server = _start(["serve", "--port", str(port), *common], tmp_path / "serve.log")
    worker = _start(
        ["worker", "--device", "cpu", "--poll-interval", "0.3", *common], tmp_path / "worker.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        log = tmp_path / "serve.log"
        wait_healthy(url, server, log.read_text, STARTUP_TIMEOUT_S)
        yield url, worker, tmp_path
    finally:
        _stop(worker)
        _stop(server)


def test_submit_over_http_worker_trains_api_reports_best(
    service: tuple[str, ForkedProcess, Path],
) -> None:
    url, worker, logs = service
    spec = tiny_spec_data(
        name="e2e-digits",
        budget={"n_trials": 4, "max_failed": 0},
        fixed={"epochs": 3, "width": 16, "depth": 2, "batch_size": 64, "scheduler": "cosine"},
        params={
            "optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
            "lr": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True},
        },
    )
    response = httpx.post(
        f"{url}/studies",
        content=yaml.safe_dump(spec),
        headers={"content-type": "application/yaml"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    study_id = response.json()["id"]
    assert response.json()["status"] == "queued"

    deadline = time.monotonic() + STUDY_TIMEOUT_S
    study = response.json()
    while study["status"] in ("queued", "running"):
        if time.monotonic() > deadline or worker.poll() is not None:
            pytest.fail(f"study not completed: {study}\n{(logs / 'worker.log').read_text()}")
        time.sleep(0.5)
        study = httpx.get(f"{url}/studies/{study_id}", timeout=10).json()

    assert study["status"] == "completed", study
    counts = study["counts"]
    assert counts["finished"] == 4
    assert counts["complete"] + counts["pruned"] == 4
    assert counts["waiting"] == counts["running"] == counts["fail"] == 0

    best = httpx.get(f"{url}/studies/{study_id}/best", timeout=10).json()
    [trial] = best["trials"]
    assert trial["state"] == "complete"
    assert set(trial["params"]) == {"optimizer", "lr"}
    assert trial["metrics"]["accuracy"] == pytest.approx(study["best_value"])
    assert study["best_value"] > 0.9
    assert trial["config"]["epochs"] == 3
    assert len(trial["per_class"]) == 10

    trials = httpx.get(f"{url}/studies/{study_id}/trials", timeout=10).json()
    assert trials["count"] == 4
    assert sorted(t["number"] for t in trials["data"]) == [0, 1, 2, 3]
    for listed in trials["data"]:
        assert len(listed["intermediate_values"]) in (1, 2, 3)

    weights = httpx.get(f"{url}/studies/{study_id}/trials/{trial['number']}/weights", timeout=10)
    assert weights.status_code == 200
    assert len(weights.content) > 1000

    assert _stop(worker) == 0
