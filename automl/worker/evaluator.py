"""Scoring a completed study's best trial(s) on the test split, once.

A worker runs a due evaluation (see ``automl.store.evaluations``) before it claims its
next trial: it reads each trial's configuration and weights, scores them with
``automl.train.evaluation.evaluate_weights`` and hands every report back in one call,
which stores them all or, if the claim was lost meanwhile, none. Nothing here raises: an
evaluation that fails ends ``failed`` with a note, and one cut short by a database outage
is taken over by a worker later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from automl.data import ImageData, load_dataset
from automl.store import (
    Backoff,
    EvaluationLease,
    EvaluationState,
    TrialTestReport,
    attrs,
    is_transient,
    load_state_dict,
    retry_transient,
)
from automl.store.evaluations import no_test_split_note
from automl.store.faults import first_line
from automl.train.evaluation import evaluate_weights
from automl.train.trial_config import stored_config
from automl.worker.coordinator import Coordinator
from automl.worker.data_identity import require_trained_data
from automl.worker.device_faults import stop_after, stops_the_worker

logger = logging.getLogger("automl.worker")

Outcome = tuple[EvaluationState, list[TrialTestReport], str | None]


def run_evaluation(
    coordinator: Coordinator,
    lease: EvaluationLease,
    device: str,
    backoff: Backoff,
    give_up: Callable[[], bool] = lambda: False,
    lost: Callable[[], bool] = lambda: False,
) -> EvaluationState | None:
    """Scores the claimed trials on the test split and stores the result.

    Args:
        coordinator: The shared state.
        lease: The claimed evaluation.
        device: Torch device to score on.
        backoff: Waits and logs during database outages.
        give_up: True stops waiting out an outage (the worker is stopping).
        lost: True once the claim is no longer held: scoring stops at the next trial.

    Returns:
        The state the evaluation ended in, or None if nothing was stored (the claim was
        lost, or the database stayed unreachable; another worker takes it over later).

    Raises:
        DeviceFaultError: After storing the failure, if a CUDA error caused it.
    """
    fault = None
    try:
        state, reports, note = score(coordinator, lease, device, lost)
    except EvaluationLostError as exc:
        logger.warning("test evaluation of study %s stopped: %s", lease.study_id, exc)
        return None
    except Exception as exc:
        if is_transient(exc):
            logger.warning("test evaluation of study %s interrupted: %s", lease.study_id, exc)
            return None
        logger.warning("test evaluation of study %s failed: %s", lease.study_id, describe(exc))
        state, reports, note = EvaluationState.FAILED, [], describe(exc)
        fault = exc if stops_the_worker(exc) else None
    stored_state = _store(coordinator, lease, backoff, give_up, (state, reports, note))
    if fault is not None:
        what = f"the test evaluation of study {lease.study_id}"
        raise stop_after(fault, lease.worker_id, what)
    return stored_state


def _store(
    coordinator: Coordinator,
    lease: EvaluationLease,
    backoff: Backoff,
    give_up: Callable[[], bool],
    outcome: Outcome,
) -> EvaluationState | None:
    """Stores the evaluation's ``outcome``; returns its state, or None if nothing was."""
    state, reports, note = outcome
    try:
        stored = retry_transient(
            lambda: coordinator.finish_evaluation(lease, state, reports, note),
            backoff=backoff,
            doing="storing test metrics",
            give_up=give_up,
        )
    except Exception as exc:
        logger.warning("test metrics of study %s not stored: %s", lease.study_id, describe(exc))
        return None
    if not stored:
        logger.warning(
            "test evaluation of study %s was taken over (or the study deleted); dropped",
            lease.study_id,
        )
        return None
    _log(lease, state, reports, note)
    return state


class EvaluationLostError(RuntimeError):
    """The evaluation's claim was lost while it scored."""


def score(
    coordinator: Coordinator,
    lease: EvaluationLease,
    device: str,
    lost: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Evaluates the weights of each trial of ``lease`` on its dataset's test split.

    Returns:
        ``done`` with one report per trial, or ``skipped`` with the reason.

    Raises:
        EvaluationLostError: If ``lost`` became True (checked before each trial).
        Exception: Whatever reading or scoring raised (the caller records it).
    """
    if not lease.trials:
        return EvaluationState.SKIPPED, [], "no completed trial"
    storage = coordinator.storage
    datasets: dict[str, ImageData] = {}
    reports = []
    for number in lease.trials:
        if lost():
            raise EvaluationLostError(
                "its claim is no longer this worker's (taken over, or the study was resumed "
                "or deleted)"
            )
        trial_id = storage.get_trial_id_from_study_id_trial_number(lease.study_id, number)
        trial = storage.get_trial(trial_id)
        if attrs.CONFIG not in trial.user_attrs:
            raise LookupError(f"trial {number} kept no configuration")
        config = stored_config(trial.user_attrs[attrs.CONFIG])
        key = config.dataset.model_dump_json()
        if key not in datasets:
            datasets[key] = load_dataset(config.dataset.source, config.dataset.options)
        data = datasets[key]
        if not data.has_test:
            return EvaluationState.SKIPPED, [], no_test_split_note(config.dataset.source)
        require_trained_data(trial, data, config.dataset.source, "test metrics not computed")
        state_dict = load_state_dict(trial, coordinator.artifacts)
        report = evaluate_weights(config, state_dict, split="test", data=data, device=device)
        reports.append(
            TrialTestReport(
                trial_id=trial_id,
                number=number,
                metrics=report.metrics,
                per_class=report.per_class,
                confusion=report.confusion,
                most_confused=report.most_confused,
                samples=report.samples,
            )
        )
    return EvaluationState.DONE, reports, None


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, for notes and logs."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def _log(
    lease: EvaluationLease,
    state: EvaluationState,
    reports: list[TrialTestReport],
    note: str | None,
) -> None:
    if state != EvaluationState.DONE:
        logger.info("study %s test evaluation %s: %s", lease.study_id, state.value, note)
        return
    for report in reports:
        logger.info(
            "study %s trial %s on the test split (%d images): accuracy=%.4f",
            lease.study_id,
            report.number,
            report.samples,
            report.metrics.get("accuracy", float("nan")),
        )


__all__ = ["run_evaluation", "score"]
