"""Workers that hold no database credentials: real ``automl proxy`` and ``automl worker`` processes.

The workers reach the state only through the proxy (``AUTOML_STORAGE=grpc://...``); the proxy
alone holds the database connection, serves the claims and runs the reaper.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automl.spec import StudySpec
from automl.store import StudyStatus, attrs, get_study, submit_study
from tests.conftest import free_port_pair, store_at
from tests.e2e.fleet import (
    FAST_LEASES,
    SMALL_TRAIN,
    Fleet,
    check_intact,
    check_kept_weights,
    running_holders,
    wait_for,
    wait_for_end,
)
from tests.forked import ForkedProcess

pytestmark = pytest.mark.slow

SpecFactory = Callable[..., StudySpec]


@pytest.fixture
def proxy_process(storage_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``automl proxy`` on the storage; yields the workers' URL and the proxy's log."""
    port = free_port_pair()
    log = tmp_path / "proxy.log"
    env = {**os.environ, **FAST_LEASES}
    env["AUTOML_ARTIFACTS_DIR"] = str(tmp_path / "artifacts")  # where store_at looks too
    command = ["--log-level", "INFO", "proxy", "--port", str(port), "--storage", storage_url]
    process = ForkedProcess(command, env, log)
    try:
        yield f"grpc://127.0.0.1:{port}", log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def test_workers_behind_the_proxy_lose_no_trial_when_killed(
    storage_url: str,
    tiny_spec: SpecFactory,
    tmp_path: Path,
    fleet_factory: Callable[..., Fleet],
    proxy_process: tuple[str, Path],
) -> None:
    proxy_url, proxy_log = proxy_process
    epochs = 6
    store = store_at(storage_url, tmp_path)
    # The workers get no database URL and no artifact folder of their own: only the proxy's URL.
    fleet = fleet_factory(proxy_url, env={"AUTOML_ARTIFACTS_DIR": str(tmp_path / "unused")})

    def output() -> str:
        return f"--- proxy\n{proxy_log.read_text()}\n{fleet.output()}"

    try:
        spec = tiny_spec(
            dataset=SMALL_TRAIN,
            budget={"n_trials": 12, "max_failed": 0, "max_retries": 5},
            fixed={"epochs": epochs, "width": 8, "depth": 1, "batch_size": 64},
        )
        study_id = submit_study(store, spec).id
        fleet.start(3)
        holders: dict[int, int] = {}
        killed: set[int] = set()

        def found() -> bool:
            # A killed worker's ticket stays "running" until it is reaped: skip its pid.
            holders.clear()
            holders.update(running_holders(store, study_id))
            for pid in killed:
                holders.pop(pid, None)
            return bool(holders)

        rng = random.Random(3)
        for _ in range(2):
            wait_for(found, "a trial past its first epoch", output, 120)
            victim = rng.choice(sorted(holders))
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            fleet.start(1)
        wait_for_end(store, study_id, fleet)

        detail = get_study(store, study_id)
        assert detail.status == StudyStatus.COMPLETED, output()
        counts = detail.counts
        assert (counts.complete, counts.running, counts.waiting) == (12, 0, 0)
        trials = store.storage.get_all_trials(study_id)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        lost = [t for t in trials if t.state == TrialState.FAIL]
        assert len({t.user_attrs[attrs.TICKET] for t in complete}) == 12
        assert 1 <= len(lost) <= 2
        assert {t.user_attrs[attrs.FAILURE] for t in lost} == {"worker_lost"}
        for trial in complete:
            # Curves, history and weights all went through the proxy into the proxy's stores.
            check_intact(store, trial, epochs)
        check_kept_weights(store, study_id)  # deleted through the proxy by racing workers
        assert "reaped trial(s)" in proxy_log.read_text()
        assert not (tmp_path / "unused").exists()  # the workers wrote nothing locally
    finally:
        store.close()
