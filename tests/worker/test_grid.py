"""A grid study through the exact claim: every cell once, however many workers race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from automl.sampling import iter_cells
from automl.spec import SpecError, StudySpec, validate_spec
from automl.store import (
    StudyStateError,
    StudyStatus,
    enqueue_trials,
    extend_study,
    get_study,
    resume_study,
    submit_study,
    tables,
)
from automl.worker import Worker, WorkerOptions
from tests.conftest import store_at, tiny_spec_data

GRID_PARAMS = {
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.4},
    "lr": {"type": "float", "low": 0.01, "high": 0.03, "step": 0.01},
}
"""adam x 3 lrs + sgd x 2 momenta x 3 lrs: 9 cells (momentum belongs to sgd)."""


def grid_spec(n_trials: int) -> StudySpec:
    return validate_spec(
        tiny_spec_data(
            name="grid",
            sampler={"name": "grid", "seed": 0},
            budget={"n_trials": n_trials, "max_failed": 0},
            params=GRID_PARAMS,
        )
    )


def run_workers(url: str, tmp_path: Path, count: int) -> list[int]:
    """Runs ``count`` workers, each with its own connections, in threads until idle."""
    ran: list[int] = []

    def work() -> None:
        store = store_at(url, tmp_path)
        try:
            options = WorkerOptions(device="cpu", exit_when_idle=True, poll_interval=0.05)
            ran.append(Worker(store, options).run())
        finally:
            store.close()

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return ran


def test_two_workers_run_each_grid_cell_exactly_once(storage_url: str, tmp_path: Path) -> None:
    spec = grid_spec(9)
    store = store_at(storage_url, tmp_path)
    try:
        study_id = submit_study(store, spec).id
        ran = run_workers(storage_url, tmp_path, 2)
        assert sum(ran) == 9
        detail = get_study(store, study_id)
        assert detail.status == StudyStatus.COMPLETED
        assert detail.counts.complete == 9
        trials = store.storage.get_all_trials(study_id)
        cells = sorted(sorted(t.params.items()) for t in trials)
        assert cells == sorted(sorted(cell.items()) for cell in iter_cells(spec))
        with store.read() as connection:
            sources = {
                row.source
                for row in connection.execute(
                    tables.tickets.select().where(tables.tickets.c.study_id == study_id)
                )
            }
        assert sources == {"grid"}
    finally:
        store.close()


def test_a_smaller_budget_samples_distinct_cells(sqlite_url: str, tmp_path: Path) -> None:
    store = store_at(sqlite_url, tmp_path)
    try:
        study_id = submit_study(store, grid_spec(4)).id
        assert sum(run_workers(sqlite_url, tmp_path, 2)) == 4
        params = [tuple(sorted(t.params.items())) for t in store.storage.get_all_trials(study_id)]
        assert len(params) == len(set(params)) == 4
    finally:
        store.close()


def test_a_grid_takes_no_trials_past_its_cells(storage_url: str, tmp_path: Path) -> None:
    """Extending a finished grid once made every worker crash on the cell past the grid
    (and, under ``automl up``, stop the API with it)."""
    store = store_at(storage_url, tmp_path)
    try:
        sampled = submit_study(store, grid_spec(4)).id  # 4 of the 9 cells
        # Found by a tester: "runs 4 configurations of an exact grid" read as if the grid
        # had no more; it has 9, and the message says how to search them.
        with pytest.raises(SpecError, match=r"runs 4 of its grid's 9 configurations, drawn"):
            extend_study(store, sampled, 1)
        # An enqueued config would take a cell's budget unit and run a cell twice.
        with pytest.raises(SpecError, match="runs each cell of an exact grid once"):
            enqueue_trials(store, sampled, [{"optimizer": "sgd"}])
        assert run_workers(storage_url, tmp_path, 1) == [4]
        with pytest.raises(SpecError, match="it takes no more trials"):
            resume_study(store, sampled, add_trials=1)
        # Found by a tester: extend said "resume it to add trials", and resume said this.
        with pytest.raises(SpecError, match="it takes no more trials"):
            extend_study(store, sampled, 1)
        with pytest.raises(
            StudyStateError, match="ran each of its 4 configurations: nothing is left"
        ):
            resume_study(store, sampled)

        # A budget past the grid stored before extend refused it: dropped, the study ends.
        full = submit_study(store, grid_spec(9)).id
        with store.write() as connection:
            connection.execute(
                tables.studies.update().where(tables.studies.c.study_id == full).values(n_trials=11)
            )
        assert run_workers(storage_url, tmp_path, 1) == [9]
        detail = get_study(store, full)
        assert (detail.status, detail.n_trials) == (StudyStatus.COMPLETED, 9)
        assert detail.counts.complete == 9
    finally:
        store.close()


def brute_force_spec(n_trials: int, **params: object) -> StudySpec:
    return validate_spec(
        tiny_spec_data(
            name="brute",
            sampler={"name": "brute_force", "seed": 0},
            budget={"n_trials": n_trials, "max_failed": 0},
            params=params or GRID_PARAMS,
        )
    )


def test_brute_force_runs_its_whole_space_and_the_study_completes(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Optuna's brute force stops the study once the space is exhausted, which outside
    ``study.optimize`` raised after the last trial was stored: the worker took its own
    result for a lost one and the study stayed running."""
    store = store_at(sqlite_url, tmp_path)
    try:
        study_id = submit_study(store, brute_force_spec(9)).id
        assert run_workers(sqlite_url, tmp_path, 1) == [9]
        detail = get_study(store, study_id)
        assert (detail.status, detail.counts.complete, detail.counts.running) == (
            StudyStatus.COMPLETED,
            9,
            0,
        )
        params = [tuple(sorted(t.params.items())) for t in store.storage.get_all_trials(study_id)]
        assert sorted(params) == sorted(
            tuple(sorted(c.items())) for c in iter_cells(brute_force_spec(9))
        )
        with pytest.raises(SpecError, match="searches a space of 9 configurations and has 9"):
            resume_study(store, study_id, add_trials=1)
        with pytest.raises(StudyStateError, match="ran each of its 9 configurations: nothing"):
            resume_study(store, study_id)
    finally:
        store.close()


def test_brute_force_needs_a_finite_space_within_the_budget() -> None:
    with pytest.raises(SpecError) as info:
        brute_force_spec(10)
    assert {e.path: e.msg for e in info.value.errors} == {
        "budget.n_trials": "the grid has 9 cells, fewer than n_trials (10); use n_trials <= 9"
    }
    with pytest.raises(SpecError) as info:
        brute_force_spec(2, lr={"type": "float", "low": 0.01, "high": 0.03})
    assert [e.path for e in info.value.errors] == ["params.lr"]
    assert "brute_force sampler: is continuous" in info.value.errors[0].msg
