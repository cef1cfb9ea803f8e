"""``automl run`` beside other workers on the same store (``automl up`` in another
terminal): a trial another worker holds is waited for, not taken for a study left."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automl.store import Store, get_study
from tests.conftest import store_at, tiny_spec_data
from tests.e2e.fleet import FAST_LEASES, SMALL_TRAIN, STUDY_TIMEOUT_S, Fleet, wait_for
from tests.forked import ForkedProcess

pytestmark = pytest.mark.slow


def test_run_waits_for_the_trial_another_worker_runs(
    sqlite_url: str, tmp_path: Path, fleet_factory: Callable[..., Fleet]
) -> None:
    """Found by a tester: ``run`` ended its short trial, found nothing left to claim, and
    exited 1 ("study 1 is still running: this worker left it") while another worker
    still trained the study's last trial."""
    spec = tiny_spec_data(
        dataset=SMALL_TRAIN,
        sampler={"name": "random", "seed": 0},
        budget={"n_trials": 2, "max_failed": 0},
        params={"epochs": {"type": "categorical", "choices": [20, 200]}},
        fixed={"width": 8, "depth": 1, "batch_size": 64},
        enqueue=[{"epochs": 20}, {"epochs": 200}],  # run's trial first: the short one
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, **FAST_LEASES, "OMP_NUM_THREADS": "1"}
    env["AUTOML_ARTIFACTS_DIR"] = str(tmp_path / "artifacts")
    env.pop("AUTOML_STORAGE", None)
    log = tmp_path / "run.log"
    run = ForkedProcess(
        ["run", str(spec_file), "--storage", sqlite_url, "--device", "cpu", "--threads", "1"],
        env,
        log,
    )
    store = store_at(sqlite_url, tmp_path)
    try:
        # The other worker starts once run holds trial 0: it can only take trial 1.
        wait_for(lambda: _running(store) == [0], "run to start trial 0", log.read_text, 60)
        fleet = fleet_factory(sqlite_url)
        fleet.start()
        wait_for(lambda: 1 in _running(store), "the worker to take trial 1", fleet.output, 60)

        code = run.wait(timeout=STUDY_TIMEOUT_S)

        output = log.read_text()
        assert code == 0, output
        assert "trials:    2/2 finished (complete 2" in output
        assert "waiting for the trials other workers run" in output
        study = get_study(store, 1)
        assert (study.status.value, study.counts.complete) == ("completed", 2)
        assert "trial 1 (ticket 2, attempt 1) complete" in fleet.output()
    finally:
        if run.poll() is None:
            run.kill()
        store.close()


def _running(store: Store) -> list[int]:
    """The numbers of study 1's running trials (none before it exists)."""
    try:
        trials = store.reader.get_all_trials(1, deepcopy=False, states=(TrialState.RUNNING,))
    except KeyError:
        return []
    return [trial.number for trial in trials]
