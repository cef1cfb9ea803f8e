"""Read models of studies and trials, shared by the API responses and the CLI.

Importing this module imports neither optuna nor SQLAlchemy: the CLI's thin client
validates API responses with these models.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic import BaseModel, Field, ValidationError, computed_field

from automl.store import attrs
from automl.store.attrs import EvaluationState, RefitState, StudyStatus

if TYPE_CHECKING:  # the thin CLI reads these models without importing optuna
    from optuna.trial import FrozenTrial

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing, with the total count."""

    data: list[T]
    count: int = Field(description="Total number of items across all pages.")


class TrialCounts(BaseModel):
    """Number of a study's trials in each state, counting each unit of its budget once.

    A trial whose worker was lost and that ran again counts once, by its last attempt
    (every attempt is still listed among the study's Optuna trials, the earlier ones as
    ``fail``). A trial stopped by a cancel counts as ``cancelled`` here, and is listed
    among the trials as ``fail`` with ``failure: cancelled``.
    """

    waiting: int = Field(0, description="Not started yet: queued, or budget not yet handed out.")
    running: int = 0
    complete: int = 0
    pruned: int = 0
    fail: int = 0
    cancelled: int = Field(0, description="Dropped when the study ended; resume runs them.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def finished(self) -> int:
        """Trials that ended: complete + pruned + failed."""
        return self.complete + self.pruned + self.fail


class StudySummary(BaseModel):
    """A study as listed: identity, lifecycle, progress and best value."""

    id: int
    name: str
    project: str = Field("default", description="The project of the key that submitted it.")
    status: StudyStatus
    status_reason: str | None = None
    directions: list[str]
    metrics: list[str]
    n_trials: int = Field(description="The budget: exact number of trials.")
    counts: TrialCounts
    best_value: float | None = Field(None, description="Best objective value (one objective).")
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


REPLAYED_HEADER = "Idempotent-Replayed"
"""The header (``true``) of the API's answer to a repeated submission: an earlier one with
the same ``Idempotency-Key`` made the study."""


class JobState(BaseModel):
    """Where a job that runs after the study (test evaluation, refit) stands."""

    state: str = Field(
        description="Test evaluation: pending, running, done, skipped or failed; refit: "
        "queued, running, done or failed."
    )
    worker: str | None = Field(None, description="The worker running it, while running.")
    since: datetime | None = Field(
        None, description="When the running worker last beat for it, or when it ended."
    )
    note: str | None = Field(None, description="Why it was skipped or failed.")


class StudyDetail(StudySummary):
    """A study with its full spec."""

    spec: dict[str, Any]
    seed: int | None = Field(
        None,
        description="The study's seed, from which its sampler and its trials' training "
        "seeds derive: sampler.seed, or the one drawn at submit (given as sampler.seed, "
        "it repeats the study in a fresh store).",
    )
    warm_start: dict[str, Any] | None = Field(
        None,
        description="What the spec's warm_start queued at submit: the source studies, how "
        "many configurations (enqueued), the param values dropped, and the configurations "
        "left out (duplicates, nothing_fits, over_budget).",
    )
    pareto_front_size: int | None = Field(
        None,
        description="With several objectives, the trials on the Pareto front of the "
        "completed ones (``GET /studies/{id}/best`` lists them); null with one objective.",
    )
    test_evaluation: JobState | None = Field(
        None,
        description="The scoring of the best trial(s) on the test split, once the study "
        "completed (``GET /studies/{id}/best`` has the metrics); null before.",
    )
    refit: JobState | None = Field(
        None, description="The refit, once asked for (``GET /studies/{id}/best`` has its result)."
    )


class TrialSummary(BaseModel):
    """A trial: its params, state, values and per-epoch values."""

    number: int
    state: str
    params: dict[str, Any]
    values: list[float | None] | None
    intermediate_values: dict[int, float | None] | None = Field(
        description="The objective's value at each epoch; null where a listing was asked "
        "without them (``intermediate_values=false``)."
    )
    metrics: dict[str, float | None] | None = None
    error: str | None = None
    failure: str | None = Field(
        None, description="Why it failed: error, out_of_memory, worker_lost, interrupted..."
    )
    ticket: int | None = Field(None, description="The budget unit; its retries share it.")
    attempt: int | None = None
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    duration_s: float | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialSummary:
        """Builds the view of an Optuna trial."""
        return cls.tolerant(_trial_fields(trial))

    @classmethod
    def tolerant(cls, fields: dict[str, Any]) -> Self:
        """The view of ``fields``, where a field read from an ``automl.*`` attribute that
        another tool wrote in another shape (optuna-dashboard's user-attribute form, a
        notebook) shows as null instead of failing the whole answer."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            wrong = {error["loc"][0] for error in exc.errors() if error["loc"]}
            if not wrong or wrong & OPTUNA_FIELDS:
                raise
            return cls.model_validate({**fields, **dict.fromkeys(wrong)})

    @staticmethod
    def fields_of(trial: FrozenTrial) -> dict[str, Any]:
        """The fields of ``of(trial)``, not yet validated (to validate a page at once)."""
        return _trial_fields(trial)


class TrialDetail(TrialSummary):
    """A trial with its full configuration, per-class report, history and notes."""

    config: dict[str, Any] | None = None
    history: list[dict[str, float]] | None = None
    per_class: list[dict[str, Any]] | None = None
    confusion: list[list[int]] | None = Field(
        None,
        description="Validation confusion matrix: rows true, columns predicted classes (up "
        "to 50 classes; past them null: a matrix grows with the square of the classes, "
        "see most_confused).",
    )
    most_confused: list[dict[str, Any]] | None = Field(
        None,
        description="The most frequent mistakes, most frequent first: up to 100 "
        "{true, predicted, count} (the confusion matrix's largest cells off its diagonal).",
    )
    classes: list[str] | None = Field(
        None, description="Class names in index order (the confusion matrix's labels)."
    )
    notes: dict[str, Any] | None = None
    best_epoch: int | None = Field(
        None,
        description="The epoch whose weights and validation metrics the trial kept (its best "
        "with restore_best, else its last).",
    )
    weights_available: bool = False
    test_metrics: dict[str, float | None] | None = Field(
        None,
        description="Every metric on the test split, measured once after the study completed "
        "(best trials only; null without a test split). Validation metrics drive the search.",
    )
    test_per_class: list[dict[str, Any]] | None = None
    test_confusion: list[list[int]] | None = Field(
        None, description="As confusion, on the test split."
    )
    test_most_confused: list[dict[str, Any]] | None = Field(
        None, description="As most_confused, on the test split."
    )

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialDetail:
        """Builds the detailed view of an Optuna trial."""
        user_attrs = trial.user_attrs
        return cls.tolerant(
            _trial_fields(trial)
            | dict(
                config=user_attrs.get(attrs.CONFIG),
                history=user_attrs.get(attrs.HISTORY),
                per_class=user_attrs.get(attrs.PER_CLASS),
                confusion=user_attrs.get(attrs.CONFUSION),
                most_confused=user_attrs.get(attrs.MOST_CONFUSED),
                classes=user_attrs.get(attrs.CLASSES),
                notes=user_attrs.get(attrs.NOTES),
                best_epoch=user_attrs.get(attrs.BEST_EPOCH),
                weights_available=attrs.WEIGHTS in user_attrs,
                test_metrics=_finite_metrics(user_attrs.get(attrs.TEST_METRICS)),
                test_per_class=user_attrs.get(attrs.TEST_PER_CLASS),
                test_confusion=user_attrs.get(attrs.TEST_CONFUSION),
                test_most_confused=user_attrs.get(attrs.TEST_MOST_CONFUSED),
            )
        )


class TestEvaluation(BaseModel):
    """The one evaluation of a completed study's best trial(s) on the test split."""

    __test__ = False  # not a pytest test class, whatever its name

    state: EvaluationState = Field(
        description="pending, running, done (test metrics stored), skipped (no test split, "
        "no completed trial) or failed."
    )
    note: str | None = Field(None, description="Why it was skipped or failed.")
    trials: list[int] | None = Field(None, description="Numbers of the trials it scored.")
    requested_at: datetime | None = None
    finished_at: datetime | None = None


class RefitView(BaseModel):
    """The best configuration retrained on train + validation and scored on the test split
    (``refit: true`` in the spec, or ``POST /studies/{id}/refit``); once ``done``, its model
    is the one the bundle and predict serve."""

    state: RefitState = Field(
        description="queued, running, done (model and test metrics stored) or failed."
    )
    note: str | None = Field(None, description="Why it failed.")
    trial: int | None = Field(None, description="The trial whose configuration was retrained.")
    epochs: int | None = Field(None, description="Epochs trained: those the trial ran.")
    train_samples: int | None = Field(None, description="Training plus validation images.")
    test_metrics: dict[str, float] | None = None
    test_per_class: list[dict[str, Any]] | None = None
    test_confusion: list[list[int]] | None = Field(
        None,
        description="Up to 50 classes (past them the refit's card, stored when it was "
        "done, names its most frequent mistakes).",
    )
    test_samples: int | None = None
    requested_at: datetime | None = None
    finished_at: datetime | None = None


class BestTrials(BaseModel):
    """The best trial (one objective) or the Pareto front (several)."""

    study_id: int
    directions: list[str]
    metrics: list[str]
    trials: list[TrialDetail]
    count: int | None = Field(
        None,
        description="Best trials on all pages: 1, or the Pareto front's size (``limit`` "
        "and ``offset`` page through it).",
    )
    test_evaluation: TestEvaluation | None = Field(
        None, description="Scoring on the test split; null until the study first completes."
    )
    refit: RefitView | None = Field(None, description="The refit; null if never asked for.")


SUMMARY_ATTRS = (attrs.METRICS, attrs.ERROR, attrs.FAILURE, attrs.TICKET, attrs.ATTEMPT)
"""The user attributes a ``TrialSummary`` shows (a listing reads no others)."""

OPTUNA_FIELDS = frozenset(
    {
        *("number", "state", "params", "values", "intermediate_values"),
        *("datetime_start", "datetime_complete", "duration_s", "weights_available"),
    }
)
"""The trial views' fields read from Optuna's own columns; the others come from
``automl.*`` attributes, which another tool may write in any shape (``tolerant``)."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _finite_metrics(value: Any) -> Any:
    """A metrics attribute with its NaN and infinite values as null (JSON has neither: a
    diverged trial's loss, a value written by hand)."""
    if not isinstance(value, dict):
        return value
    return {
        name: None if isinstance(v, float) and not math.isfinite(v) else v
        for name, v in value.items()
    }


def _aware(value: datetime | None) -> datetime | None:
    # Optuna's times are naive local time; a date-time without its offset is not RFC 3339
    # (what the schema's ``format: date-time`` promises) and is ambiguous to a client.
    return None if value is None else value.astimezone()


def _trial_fields(trial: FrozenTrial) -> dict[str, Any]:
    from optuna.trial import TrialState

    duration = trial.duration.total_seconds() if trial.duration is not None else None
    values = None if trial.values is None else [_finite(v) for v in trial.values]
    if trial.state == TrialState.PRUNED and values is None and trial.intermediate_values:
        values = [_finite(trial.intermediate_values[max(trial.intermediate_values)])]
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "params": trial.params,
        "values": values,
        "intermediate_values": {
            step: _finite(v) for step, v in sorted(trial.intermediate_values.items())
        },
        "metrics": _finite_metrics(trial.user_attrs.get(attrs.METRICS)),
        "error": trial.user_attrs.get(attrs.ERROR),
        "failure": trial.user_attrs.get(attrs.FAILURE),
        "ticket": trial.user_attrs.get(attrs.TICKET),
        "attempt": trial.user_attrs.get(attrs.ATTEMPT),
        "datetime_start": _aware(trial.datetime_start),
        "datetime_complete": _aware(trial.datetime_complete),
        "duration_s": duration,
    }
