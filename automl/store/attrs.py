"""Names of the Optuna user attributes where automl keeps its state.

Everything lives in Optuna's own schema (study and trial user attributes), so
optuna-dashboard shows it and there is no second copy of trial state.
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

# Trial attributes.
CONFIG = PREFIX + "config"
METRICS = PREFIX + "metrics"
HISTORY = PREFIX + "history"
PER_CLASS = PREFIX + "per_class"
CONFUSION = PREFIX + "confusion"
ERROR = PREFIX + "error"
WEIGHTS = PREFIX + "weights_artifact"
WORKER = PREFIX + "worker"


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
