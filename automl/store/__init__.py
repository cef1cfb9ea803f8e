"""The store: Optuna's RDB storage plus automl's own tables, leases, reaper and artifacts."""

import importlib
from typing import Any

from automl.store import attrs as attrs  # the one name imported eagerly: it is light

# Names are imported from their modules on first use, so that a light module (``views``,
# ``attrs``) can be imported without SQLAlchemy, optuna or torch: the CLI's thin client
# reads the views. Add a new public name to its module's tuple (``__all__`` follows).
_SOURCES: dict[str, tuple[str, ...]] = {
    "artifact_errors": (
        "ArtifactDamagedError",
        "ArtifactStoreError",
        "ArtifactUnreadableError",
        "WeightsNotFoundError",
    ),
    "artifacts": (
        "ArtifactStore",
        "FolderArtifactStore",
        "SqlArtifactStore",
        "artifact_size",
        "check_weights",
        "discard",
        "load_state_dict",
        "open_weights",
        "read_checkpoint",
        "read_state_dict",
        "remove_quietly",
        "save_model_card",
        "save_weights",
        "weights_format",
        "write_checkpoint",
    ),
    "attrs": (
        "FailureKind",
        "StudyStatus",
        "EvaluationState",
        "RefitState",
    ),
    "best_reads": (
        "RefitResult",
        "best_trials",
    ),
    "evaluations": (
        "EvaluationLease",
        "TrialTestReport",
        "beat_evaluation",
        "claim_evaluation",
        "finish_evaluation",
        "lost_evaluations",
    ),
    "faults": (
        "Backoff",
        "StorageUnavailableError",
        "is_disk_full",
        "is_transient",
        "retry_transient",
    ),
    "leases": (
        "Lease",
        "LeaseLostError",
        "LeaseStatus",
        "claim",
        "finish",
        "finish_and_settle",
        "heartbeat",
        "record_checkpoint",
        "record_params",
        "record_results",
        "record_trial",
        "release",
    ),
    "projects": (
        "DEFAULT_PROJECT",
        "ProjectLimitError",
        "automl_study_name",
        "check_project_limits",
        "study_project",
    ),
    "reaper": (
        "Reaped",
        "Reaper",
        "end_due_studies",
        "lost_tickets",
        "reap_stale",
        "remove_orphans",
    ),
    "refits": (
        "RefitLease",
        "beat_refit",
        "claim_refit",
        "finish_refit",
        "lost_refits",
        "refit_artifact_ids",
        "release_refit",
        "served_refit",
    ),
    "retention": ("Outranking", "outranked_reason", "retain_weights"),
    "lean_cache": ("LeanTrialCache",),
    "study_caches": ("CACHED_STUDIES", "StudyCaches"),
    "trial_buffer": ("BufferedTrialStorage", "template_from_wire", "template_to_wire"),
    "trial_writes": (
        "TrialWrites",
        "apply_writes",
        "create_trial",
        "running_trial_template",
        "tell_trial",
        "write_trial",
        "write_trials",
        "writes_from_json",
    ),
    "storage": (
        "StorageError",
        "Store",
        "check_schema",
        "normalize_url",
        "open_store",
        "open_store_from",
    ),
    "studies": (
        "cancel_study",
        "delete_study",
        "end_study_if_done",
        "enqueue_trials",
        "extend_study",
        "fail_without_optuna_study",
        "queue_refit",
        "rerun_failed",
        "resume_study",
        "submit_or_replay",
        "submit_study",
        "submitted_spec",
    ),
    "study_reads": (
        "NoBestTrialError",
        "StudyNotFoundError",
        "StudyStateError",
        "TrialNotFoundError",
        "get_frozen_trial",
        "get_status",
        "get_study",
        "get_trial",
        "list_studies",
        "list_trials",
    ),
    "views": (
        "BestTrials",
        "Page",
        "RefitView",
        "StudyDetail",
        "StudySummary",
        "TestEvaluation",
        "TrialCounts",
        "TrialDetail",
        "TrialSummary",
    ),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}

__all__ = sorted([*_MODULE_OF, "attrs"])


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
