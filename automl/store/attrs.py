"""Names of the Optuna user attributes automl writes, and the lifecycle states they hold.

Trials live in Optuna's own schema, so optuna-dashboard shows them. A study's status is
kept (compare-and-set) in ``automl_studies`` and mirrored into its user attributes.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "automl."

# Study attributes.
SPEC = PREFIX + "spec"
STATUS = PREFIX + "status"
STATUS_REASON = PREFIX + "status_reason"
CREATED_AT = PREFIX + "created_at"
STARTED_AT = PREFIX + "started_at"
FINISHED_AT = PREFIX + "finished_at"
WARM_START = PREFIX + "warm_start"
TEST_EVALUATION = PREFIX + "test_evaluation"  # state of the best trials' test-split scoring
# The refit of the best configuration on train + validation: its state and result (on the
# study); on the trial view that serves a refit model, what that model is.
REFIT = PREFIX + "refit"

# Trial attributes.
CONFIG = PREFIX + "config"
METRICS = PREFIX + "metrics"
HISTORY = PREFIX + "history"
PER_CLASS = PREFIX + "per_class"
CONFUSION = PREFIX + "confusion"  # whole up to DENSE_CONFUSION_CLASSES classes
MOST_CONFUSED = PREFIX + "most_confused"  # its largest cells off the diagonal
CLASSES = PREFIX + "classes"  # class names in index order: the confusion matrix's labels
# The identity of the data the trial trained on (classes, sample shape, images per class
# and split: ``automl.worker.data_identity``), recorded once loaded.
DATA = PREFIX + "data"
NOTES = PREFIX + "notes"  # what the training run reports besides metrics (gan_train_seconds)
# The epoch whose weights and metrics the trial kept (restore_best: the best one).
BEST_EPOCH = PREFIX + "best_epoch"
ERROR = PREFIX + "error"
WEIGHTS = PREFIX + "weights_artifact"
# Why a trial no longer has weights (it fell out of the study's keep_weights).
WEIGHTS_REMOVED = PREFIX + "weights_removed"
# What the weights expect as input (shape, preprocessing, normalization, dataset
# fingerprint) and the library versions that trained them: what a model card needs
# besides the other attributes, recorded where the data was loaded.
INPUT = PREFIX + "input"
LIBRARIES = PREFIX + "libraries"
WORKER = PREFIX + "worker"
FAILURE = PREFIX + "failure"
TICKET = PREFIX + "ticket"
ATTEMPT = PREFIX + "attempt"
LEASE = PREFIX + "lease"
RESUMED_FROM_EPOCH = PREFIX + "resumed_from_epoch"
# Scores on the test split, set once the study completed (best trials only); never read by
# the search, which sees validation metrics alone.
TEST_METRICS = PREFIX + "test_metrics"
TEST_PER_CLASS = PREFIX + "test_per_class"
TEST_CONFUSION = PREFIX + "test_confusion"
TEST_MOST_CONFUSED = PREFIX + "test_most_confused"


class FailureKind(StrEnum):
    """Why a trial failed (the ``automl.failure`` attribute and the ticket's ``failure``)."""

    ERROR = "error"  # the configuration itself failed: counts toward budget.max_failed
    OUT_OF_MEMORY = "out_of_memory"
    WORKER_LOST = "worker_lost"  # no heartbeat for the grace period
    INTERRUPTED = "interrupted"  # its worker was stopped; the trial went back to the queue
    CANCELLED = "cancelled"  # its study was cancelled (or ended) while it ran


class StudyStatus(StrEnum):
    """Lifecycle of a study. Workers claim trials only from ``queued`` and ``running``."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        """Whether workers may still start trials of the study."""
        return self in (StudyStatus.QUEUED, StudyStatus.RUNNING)


class EvaluationState(StrEnum):
    """Where a completed study's test-split evaluation is."""

    PENDING = "pending"  # due: the study completed; any worker may claim it
    RUNNING = "running"  # claimed by a worker (taken over once its claim is stale)
    DONE = "done"  # test metrics stored on the evaluated trials
    SKIPPED = "skipped"  # nothing to evaluate: no test split, or no completed trial
    FAILED = "failed"  # the evaluation raised; the note says why


class RefitState(StrEnum):
    """Where a study's refit (best configuration retrained on train + validation) is."""

    QUEUED = "queued"  # requested; any worker may claim it once the study has ended
    RUNNING = "running"  # claimed by a worker (taken over once its claim is stale)
    DONE = "done"  # weights, model card and test metrics stored
    FAILED = "failed"  # it raised, or there was nothing to refit; the note says why
