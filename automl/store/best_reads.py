"""Reading a study's best trials and what came after them: the test-split evaluation and
the refit. Light (no spec models, no registries, no torch), as ``study_reads`` is, so that
``automl best`` answers without importing them; the jobs themselves (claiming, finishing)
live in ``evaluations`` and ``refits``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from optuna.trial import FrozenTrial

from automl.store import optuna_rows, tables
from automl.store.jobs import job_result
from automl.store.pareto import pareto_front
from automl.store.status import ACTIVE
from automl.store.storage import Store, retrying_read
from automl.store.study_reads import NoBestTrialError, spec_heads, stored_datetime, study_row
from automl.store.tables import EvaluationState, RefitState
from automl.store.views import BestTrials, RefitView, TestEvaluation, TrialDetail

OPTUNA_STUDY_GONE = (
    "its Optuna study (every trial) was deleted outside automl, with optuna-dashboard or "
    "`optuna delete-study`; `automl delete {study_id}` removes what is left"
)
"""Why a study whose Optuna study vanished under it fails."""


@dataclass(frozen=True)
class RefitResult:
    """A finished refit: the retrained model and its scores on the test split.

    Attributes:
        trial_number: The trial whose configuration was retrained.
        epochs: Epochs trained (those the trial ran).
        train_samples: Images trained on (training plus validation split).
        weights: Artifact id of the weights (safetensors).
        card: Artifact id of the model card (JSON), if it was stored.
        test_metrics: Every registered metric on the test split.
        test_per_class: Precision, recall, F1 and support of each class.
        test_confusion: The confusion matrix; rows are true classes, columns predictions
            (None past ``DENSE_CONFUSION_CLASSES`` classes: its most frequent mistakes are
            not kept for a refit, whose stored result an API of an automl before them
            could not read; the trial's own test evaluation keeps them).
        test_samples: Images in the test split.
        duration_s: Seconds the training took.
    """

    trial_number: int
    epochs: int
    train_samples: int
    weights: str
    card: str | None
    test_metrics: dict[str, float]
    test_per_class: list[dict[str, Any]]
    test_confusion: list[list[int]] | None
    test_samples: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RefitResult:
        """The result that ``to_json`` wrote (fields a newer automl added are left out)."""
        return job_result(cls, data)


@retrying_read
def best_trials(
    store: Store, study_id: int, *, limit: int | None = None, offset: int = 0
) -> BestTrials:
    """The best trial (one ``ORDER BY ... LIMIT 1``), or the Pareto front (``limit`` of
    its trials past the first ``offset``; all without a limit), with the state of their
    evaluation on the test split and of the refit.

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
    """
    with store.read() as connection:
        row = study_row(connection, study_id)
        evaluation = read_evaluation(connection, study_id)
        refit = read_refit(connection, study_id)
        gone = not optuna_rows.optuna_study_exists(connection, study_id)
        directions, metrics = ((), ()) if gone else spec_heads(connection, study_id, row.spec)
    best, count = [], 0
    if not gone:
        best, count = best_trials_page(store, study_id, directions, limit, offset)
    if not count:
        if gone:
            message = f"study {study_id} has no trials: " + OPTUNA_STUDY_GONE
            raise NoBestTrialError(message.format(study_id=study_id), ended=True)
        if row.status in ACTIVE:
            raise NoBestTrialError(f"study {study_id} has no completed trial yet")
        message = f"study {study_id} ended ({row.status}) without a completed trial"
        raise NoBestTrialError(message, ended=True)
    return BestTrials(
        study_id=study_id,
        directions=list(directions),
        metrics=list(metrics),
        trials=[TrialDetail.of(trial) for trial in best],
        count=count,
        test_evaluation=evaluation,
        refit=refit,
    )


def best_trials_of(store: Store, study_id: int, directions: Sequence[str]) -> list[FrozenTrial]:
    """The best completed trial (one objective) or the whole Pareto front, in number order
    (``best_trials_page`` without a limit)."""
    return best_trials_page(store, study_id, directions)[0]


def best_trials_page(
    store: Store,
    study_id: int,
    directions: Sequence[str],
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[FrozenTrial], int]:
    """The best completed trial (one objective) or a page of the Pareto front, in number
    order, with the number of best trials on all pages.

    The front is the one Optuna's ``best_trials`` gives (``automl.store.pareto``), found
    from every completed trial's values (one query); only the page's trials are loaded,
    without their system attributes.
    """
    if len(directions) == 1:
        with store.read() as connection:
            maximize = directions[0] == "maximize"
            best_id = optuna_rows.best_trial_id(connection, study_id, maximize)
        if best_id is None:
            return [], 0
        return ([store.reader.get_trial(best_id)] if offset == 0 and limit != 0 else []), 1
    with store.read() as connection:
        values = optuna_rows.completed_values(connection, study_id)
        # A study's trial ids grow with their numbers: id order is number order.
        front = sorted(pareto_front(values, directions))
        end = None if limit is None else offset + limit
        page = optuna_rows.load_trials(connection, front[offset:end])
    return sorted(page, key=lambda trial: trial.number), len(front)


def read_evaluation(connection: sa.engine.Connection, study_id: int) -> TestEvaluation | None:
    """Where the study's test-split evaluation stands (None if it never completed)."""
    row = connection.execute(
        sa.select(tables.evaluations).where(tables.evaluations.c.study_id == study_id)
    ).first()
    if row is None:
        return None
    return TestEvaluation(
        state=EvaluationState(row.state),
        note=row.note,
        trials=None if row.trials is None else json.loads(row.trials),
        requested_at=stored_datetime(row.requested_at),
        finished_at=stored_datetime(row.finished_at),
    )


def read_refit(connection: sa.engine.Connection, study_id: int) -> RefitView | None:
    """Where the study's refit stands (None if never asked for), with its result once
    ``done``: a refit queued again (the study was resumed and found a better trial) shows
    none until it is done, not the result of the one before, which no longer serves."""
    row = connection.execute(
        sa.select(tables.refits).where(tables.refits.c.study_id == study_id)
    ).first()
    if row is None:
        return None
    result = done_result(row.state, row.result)
    return RefitView(
        state=RefitState(row.state),
        note=row.note,
        trial=None if result is None else result.trial_number,
        epochs=None if result is None else result.epochs,
        train_samples=None if result is None else result.train_samples,
        test_metrics=None if result is None else result.test_metrics,
        test_per_class=None if result is None else result.test_per_class,
        test_confusion=None if result is None else result.test_confusion,
        test_samples=None if result is None else result.test_samples,
        requested_at=stored_datetime(row.requested_at),
        finished_at=stored_datetime(row.finished_at),
    )


def done_result(state: str | None, result: str | None) -> RefitResult | None:
    """A refit row's latest result while the refit is ``done`` (None otherwise)."""
    if state != RefitState.DONE.value or result is None:
        return None
    return RefitResult.from_json(json.loads(result))


__all__ = [
    "OPTUNA_STUDY_GONE",
    "RefitResult",
    "best_trials",
    "best_trials_of",
    "best_trials_page",
    "done_result",
    "read_evaluation",
    "read_refit",
]
