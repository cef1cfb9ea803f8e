"""Races between status changes end in exactly one consistent outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from automl.spec import StudySpec
from automl.store import (
    Store,
    StudyStateError,
    StudyStatus,
    attrs,
    cancel_study,
    end_study_if_done,
    get_study,
    submit_study,
)
from tests.conftest import store_at
from tests.store.conftest import end_trial, start_trial

SpecFactory = Callable[..., StudySpec]
ROUNDS = 50


def _race(worker_side: Store, user_side: Store, study_id: int) -> str:
    """Completes the study's last trial and cancels the study at the same moment.

    Returns:
        ``cancelled`` if the cancel went through, else the cancel's error message.
    """
    lease, trial_id = start_trial(worker_side, study_id)
    start = threading.Barrier(2)
    cancel_result: list[str] = []

    def complete() -> None:
        start.wait()
        end_trial(worker_side, lease, trial_id, 0.5)
        end_study_if_done(worker_side, study_id)

    def cancel() -> None:
        start.wait()
        try:
            cancel_study(user_side, study_id)
            cancel_result.append("cancelled")
        except StudyStateError as exc:
            cancel_result.append(str(exc))

    threads = [threading.Thread(target=complete), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    [result] = cancel_result
    return result


def test_cancel_racing_the_final_trial_has_one_outcome(
    storage_url: str, tiny_spec: SpecFactory, tmp_path: Path
) -> None:
    worker_side, user_side = store_at(storage_url, tmp_path), store_at(storage_url, tmp_path)
    outcomes: dict[str, int] = {"cancelled": 0, "completed": 0}
    try:
        for _ in range(ROUNDS):
            study_id = submit_study(user_side, tiny_spec(budget={"n_trials": 1})).id
            cancel_result = _race(worker_side, user_side, study_id)

            detail = get_study(user_side, study_id)
            counts = detail.counts
            # The trial's result is kept either way, and nothing is left queued or running.
            assert (counts.complete, counts.running, counts.waiting) == (1, 0, 0)
            mirrored = user_side.storage.get_study_user_attrs(study_id)[attrs.STATUS]
            assert mirrored == detail.status.value
            if cancel_result == "cancelled":
                assert detail.status == StudyStatus.CANCELLED
            else:
                assert detail.status == StudyStatus.COMPLETED
                assert cancel_result == f"study {study_id} is already completed"
            outcomes[detail.status.value] += 1
    finally:
        worker_side.close()
        user_side.close()
    assert sum(outcomes.values()) == ROUNDS
