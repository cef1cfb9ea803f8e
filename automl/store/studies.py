"""Study lifecycle on the Optuna storage: submit, read, cancel, complete, fail."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automl.pruners import build_pruner
from automl.samplers import build_sampler
from automl.spec import StudySpec
from automl.store import attrs
from automl.store.attrs import StudyStatus
from automl.store.views import (
    BestTrials,
    Page,
    StudyDetail,
    StudySummary,
    TrialCounts,
    TrialDetail,
    TrialSummary,
)

INTERRUPTED_PREFIX = "interrupted:"
"""Start of the error recorded on a trial whose worker was stopped mid-training."""


class StudyNotFoundError(LookupError):
    """No automl study has this id."""

    def __init__(self, study_id: int) -> None:
        super().__init__(f"study {study_id} not found")
        self.study_id = study_id


class TrialNotFoundError(LookupError):
    """The study has no trial with this number."""


class StudyStateError(RuntimeError):
    """The study's status does not allow the operation (e.g. cancelling a finished study)."""


class NoBestTrialError(LookupError):
    """The study has no completed trial yet."""


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def submit_study(storage: BaseStorage, spec: StudySpec) -> StudyDetail:
    """Creates the Optuna study of ``spec`` and queues exactly ``n_trials`` trials.

    The name is the spec's, with ``-2``, ``-3``... appended when already taken. The
    study becomes visible to workers (status ``queued``) only once every trial is queued.
    """
    study = _create_unique_study(storage, spec)
    study_id = study._study_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(spec.metrics)
    storage.set_study_user_attr(
        study_id, attrs.SPEC, spec.model_dump(mode="json", exclude_none=True)
    )
    storage.set_study_user_attr(study_id, attrs.CREATED_AT, now().isoformat())
    for _ in range(spec.budget.n_trials):
        study.enqueue_trial({})
    set_status(storage, study_id, StudyStatus.QUEUED)
    return get_study(storage, study_id)


def _create_unique_study(storage: BaseStorage, spec: StudySpec) -> optuna.Study:
    taken = {study.study_name for study in storage.get_all_studies()}
    for suffix in range(1, 10_000):
        name = spec.name if suffix == 1 else f"{spec.name}-{suffix}"
        if name in taken:
            continue
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                directions=spec.directions,
                sampler=build_sampler(spec.sampler.name, spec.sampler.options, spec.sampler.seed),
                pruner=build_pruner(spec.pruner_or_default.name, spec.pruner_or_default.options),
            )
        except DuplicatedStudyError:
            continue  # another process took it between our listing and our insert
    raise StudyStateError(f"no free study name for {spec.name!r}")


def _user_attrs(storage: BaseStorage, study_id: int) -> dict[str, Any]:
    try:
        user_attrs = storage.get_study_user_attrs(study_id)
    except KeyError:
        raise StudyNotFoundError(study_id) from None
    if attrs.SPEC not in user_attrs:
        raise StudyNotFoundError(study_id)  # an Optuna study that automl did not create
    return user_attrs


def load_spec(storage: BaseStorage, study_id: int) -> StudySpec:
    """The spec a study was submitted with.

    Raises:
        StudyNotFoundError: If there is no such automl study.
    """
    return _stored_spec(_user_attrs(storage, study_id)[attrs.SPEC])


def _stored_spec(data: dict[str, Any]) -> StudySpec:
    # Stored specs were fully checked at submission; only rebuild the model.
    return StudySpec.model_validate(data)


def get_status(storage: BaseStorage, study_id: int) -> StudyStatus:
    """The lifecycle status of a study."""
    return StudyStatus(_user_attrs(storage, study_id).get(attrs.STATUS, StudyStatus.QUEUED))


def set_status(
    storage: BaseStorage, study_id: int, status: StudyStatus, reason: str | None = None
) -> None:
    """Records a new status (and why), with the start or finish time when it applies."""
    if status == StudyStatus.RUNNING:
        storage.set_study_user_attr(study_id, attrs.STARTED_AT, now().isoformat())
    elif not status.is_active:
        storage.set_study_user_attr(study_id, attrs.FINISHED_AT, now().isoformat())
    if reason is not None:
        storage.set_study_user_attr(study_id, attrs.STATUS_REASON, reason)
    storage.set_study_user_attr(study_id, attrs.STATUS, status.value)


def mark_running(storage: BaseStorage, study_id: int) -> None:
    """Moves a ``queued`` study to ``running`` (its first trial started)."""
    if get_status(storage, study_id) == StudyStatus.QUEUED:
        set_status(storage, study_id, StudyStatus.RUNNING)


def cancel_study(storage: BaseStorage, study_id: int) -> StudyDetail:
    """Cancels a queued or running study: no new trial starts; queued trials stay queued.

    Raises:
        StudyNotFoundError: If there is no such study.
        StudyStateError: If the study already ended.
    """
    status = get_status(storage, study_id)
    if not status.is_active:
        raise StudyStateError(f"study {study_id} is already {status.value}")
    set_status(storage, study_id, StudyStatus.CANCELLED, "cancelled by request")
    return get_study(storage, study_id)


def settle_study(storage: BaseStorage, study_id: int) -> StudyStatus:
    """Ends an active study whose budget is spent, whose time ran out or that failed too often.

    Called by workers after every trial; safe to call from several at once.
    """
    status = get_status(storage, study_id)
    if not status.is_active:
        return status
    spec = load_spec(storage, study_id)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts = TrialCounts.of(trials)
    failed = sum(1 for trial in trials if is_config_failure(trial))
    if failed > spec.budget.max_failed:
        reason = f"{failed} trials failed (max_failed is {spec.budget.max_failed})"
        set_status(storage, study_id, StudyStatus.FAILED, reason)
        return StudyStatus.FAILED
    if counts.finished >= spec.budget.n_trials:
        set_status(storage, study_id, StudyStatus.COMPLETED, "all trials finished")
        return StudyStatus.COMPLETED
    if counts.running == 0 and is_timed_out(storage, study_id, spec):
        set_status(storage, study_id, StudyStatus.COMPLETED, "timeout reached")
        return StudyStatus.COMPLETED
    return status


def is_config_failure(trial: FrozenTrial) -> bool:
    """A FAIL caused by the trial itself, not by its worker being stopped.

    Interrupted trials still use up their budget slot, but do not count toward
    ``max_failed``: stopping workers must not fail a study.
    """
    error = str(trial.user_attrs.get(attrs.ERROR, ""))
    return trial.state == TrialState.FAIL and not error.startswith(INTERRUPTED_PREFIX)


def is_timed_out(storage: BaseStorage, study_id: int, spec: StudySpec | None = None) -> bool:
    """Whether the study's ``budget.timeout`` has passed since it started running."""
    spec = spec or load_spec(storage, study_id)
    started = _user_attrs(storage, study_id).get(attrs.STARTED_AT)
    if spec.budget.timeout is None or started is None:
        return False
    return (now() - datetime.fromisoformat(started)).total_seconds() > spec.budget.timeout


def active_study_ids(storage: BaseStorage) -> list[int]:
    """Ids of queued and running studies, oldest first."""
    ids = []
    for study in storage.get_all_studies():
        status = study.user_attrs.get(attrs.STATUS)
        if attrs.SPEC in study.user_attrs and status in (StudyStatus.QUEUED, StudyStatus.RUNNING):
            ids.append(study._study_id)  # FrozenStudy exposes its id only privately
    return sorted(ids)


def get_study(storage: BaseStorage, study_id: int) -> StudyDetail:
    """The full view of one study.

    Raises:
        StudyNotFoundError: If there is no such study.
    """
    user_attrs = _user_attrs(storage, study_id)
    summary = _summary(storage, study_id, storage.get_study_name_from_id(study_id), user_attrs)
    return StudyDetail(**summary.model_dump(), spec=user_attrs[attrs.SPEC])


def list_studies(
    storage: BaseStorage,
    *,
    status: StudyStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page[StudySummary]:
    """Studies, newest first, optionally only those with ``status``."""
    studies = [
        study
        for study in storage.get_all_studies()
        if attrs.STATUS in study.user_attrs
        and (status is None or study.user_attrs[attrs.STATUS] == status.value)
    ]
    studies.sort(key=lambda study: study._study_id, reverse=True)
    page = studies[offset : offset + limit]
    data = [_summary(storage, s._study_id, s.study_name, s.user_attrs) for s in page]
    return Page(data=data, count=len(studies))


def _summary(
    storage: BaseStorage, study_id: int, name: str, user_attrs: dict[str, Any]
) -> StudySummary:
    spec = _stored_spec(user_attrs[attrs.SPEC])
    counts = TrialCounts.of(storage.get_all_trials(study_id, deepcopy=False))
    best_value = None
    if len(spec.directions) == 1 and counts.complete:
        best_value = storage.get_best_trial(study_id).value
    return StudySummary(
        id=study_id,
        name=name,
        status=user_attrs.get(attrs.STATUS, StudyStatus.QUEUED),
        status_reason=user_attrs.get(attrs.STATUS_REASON),
        directions=spec.directions,
        metrics=spec.metrics,
        n_trials=spec.budget.n_trials,
        counts=counts,
        best_value=best_value,
        created_at=user_attrs.get(attrs.CREATED_AT),
        started_at=user_attrs.get(attrs.STARTED_AT),
        finished_at=user_attrs.get(attrs.FINISHED_AT),
    )


def list_trials(
    storage: BaseStorage,
    study_id: int,
    *,
    state: TrialState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[TrialSummary]:
    """A study's trials in number order, optionally only those in ``state``."""
    _user_attrs(storage, study_id)
    states = None if state is None else (state,)
    trials = storage.get_all_trials(study_id, deepcopy=False, states=states)
    page = trials[offset : offset + limit]
    return Page(data=[TrialSummary.of(trial) for trial in page], count=len(trials))


def get_trial(storage: BaseStorage, study_id: int, number: int) -> TrialDetail:
    """One trial of a study, by its number.

    Raises:
        StudyNotFoundError, TrialNotFoundError: If either does not exist.
    """
    return TrialDetail.of(get_frozen_trial(storage, study_id, number))


def get_frozen_trial(storage: BaseStorage, study_id: int, number: int) -> FrozenTrial:
    """The Optuna trial of a study, by its number."""
    _user_attrs(storage, study_id)
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError:
        raise TrialNotFoundError(f"study {study_id} has no trial {number}") from None
    return storage.get_trial(trial_id)


def best_trials(storage: BaseStorage, study_id: int) -> BestTrials:
    """The best trial, or the Pareto front of a multi-objective study.

    Raises:
        StudyNotFoundError: If there is no such study.
        NoBestTrialError: If no trial has completed yet.
    """
    spec = load_spec(storage, study_id)
    if len(spec.directions) == 1:
        try:
            best = [storage.get_best_trial(study_id)]
        except ValueError:
            best = []
    else:
        name = storage.get_study_name_from_id(study_id)
        best = optuna.load_study(study_name=name, storage=storage).best_trials
    if not best:
        raise NoBestTrialError(f"study {study_id} has no completed trial yet")
    return BestTrials(
        study_id=study_id,
        directions=spec.directions,
        metrics=spec.metrics,
        trials=[TrialDetail.of(trial) for trial in sorted(best, key=lambda t: t.number)],
    )
