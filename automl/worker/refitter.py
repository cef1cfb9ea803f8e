"""Refitting an ended study's best configuration on train + validation, once.

A worker runs a due refit (see ``automl.store.refits``) before it claims its next trial,
after any due test-split evaluation: it retrains the best trial's configuration, with the
same seed and learning-rate schedule, on the training plus validation split, stopping after
the epoch whose weights the trial kept (no pruning, early stopping or best epoch: nothing is
chosen any more), scores the model on the test split as the evaluation scores trials
(``evaluate_weights``), writes the weights (safetensors) and the model card to the artifact
store and hands the result back in one call, which stores it or, if the claim was lost
meanwhile, nothing (the artifacts are then removed again).

Normalization keeps the training split's statistics, which the trial's card states and
predict recomputes, so the refit model takes exactly the input the trial's model took.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from optuna.trial import FrozenTrial

from automl.data import ImageData, load_dataset
from automl.delivery.card import build_card, trial_config
from automl.delivery.refit import as_refit_trial
from automl.store import (
    Backoff,
    RefitLease,
    RefitResult,
    RefitState,
    attrs,
    is_transient,
    remove_quietly,
    retry_transient,
)
from automl.store.artifacts import weights_bytes
from automl.store.refits import refit_artifact_ids
from automl.train import TrainingInterrupted, train
from automl.train.evaluation import evaluate_weights
from automl.train.imbalance import LocalArtifactCache
from automl.train.trial_config import TrialConfig
from automl.worker.coordinator import Coordinator
from automl.worker.data_identity import require_trained_data
from automl.worker.device_faults import stop_after, stops_the_worker
from automl.worker.evaluator import describe

logger = logging.getLogger("automl.worker")

Outcome = tuple[RefitState, RefitResult | None, str | None]


class RefitLostError(RuntimeError):
    """The refit's claim was taken over while it trained."""


def run_refit(
    coordinator: Coordinator,
    lease: RefitLease,
    device: str,
    backoff: Backoff,
    stopping: Callable[[], bool] = lambda: False,
    lost: Callable[[], bool] = lambda: False,
) -> RefitState | None:
    """Retrains, scores and stores the claimed refit.

    Args:
        coordinator: The shared state.
        lease: The claimed refit.
        device: Torch device to train on.
        backoff: Waits and logs during database outages.
        stopping: True stops training (the worker is stopping); the claim is then given
            back, so another worker takes it over at once.
        lost: True once the claim is no longer held (see ``JobKeeper``): training stops
            and nothing is stored.

    Returns:
        The state the refit ended in, or None if nothing was stored (stopped, the claim
        was lost, or the database stayed unreachable).

    Raises:
        DeviceFaultError: After storing the failure, if a CUDA error caused it.
    """
    written: list[str] = []
    fault = None
    try:
        state, result, note = refit(coordinator, lease, device, written, stopping, lost)
    except (TrainingInterrupted, RefitLostError) as exc:
        logger.warning("refit of study %s stopped: %s", lease.study_id, exc)
        _remove(coordinator, written)
        if isinstance(exc, TrainingInterrupted):
            _release(coordinator, lease)
        return None
    except Exception as exc:
        _remove(coordinator, written)
        if is_transient(exc):
            logger.warning("refit of study %s interrupted: %s", lease.study_id, exc)
            return None
        logger.warning("refit of study %s failed: %s", lease.study_id, describe(exc))
        state, result, note = RefitState.FAILED, None, describe(exc)
        fault = exc if stops_the_worker(exc) else None
    stored_state = _store(coordinator, lease, backoff, stopping, written, (state, result, note))
    if fault is not None:
        raise stop_after(fault, lease.worker_id, f"the refit of study {lease.study_id}")
    return stored_state


def _store(
    coordinator: Coordinator,
    lease: RefitLease,
    backoff: Backoff,
    stopping: Callable[[], bool],
    written: list[str],
    outcome: Outcome,
) -> RefitState | None:
    """Stores the refit's ``outcome``; returns its state, or None if nothing was stored."""
    state, result, note = outcome
    try:
        stored = retry_transient(
            lambda: coordinator.finish_refit(lease, state, result, note),
            backoff=backoff,
            doing="storing a refit",
            give_up=stopping,
        )
    except Exception as exc:  # stored or not is unknown: the artifacts stay
        logger.warning("refit of study %s not stored: %s", lease.study_id, describe(exc))
        return None
    if not stored:
        logger.warning(
            "refit of study %s was taken over (or the study deleted); dropped", lease.study_id
        )
        _remove(coordinator, written)
        return None
    if result is None:
        logger.info("study %s refit %s: %s", lease.study_id, state.value, note)
    else:
        logger.info(
            "study %s refit of trial %s (%d epochs, %d images) on the test split: accuracy=%.4f",
            lease.study_id,
            result.trial_number,
            result.epochs,
            result.train_samples,
            result.test_metrics.get("accuracy", float("nan")),
        )
    return state


def refit(
    coordinator: Coordinator,
    lease: RefitLease,
    device: str,
    written: list[str],
    stopping: Callable[[], bool] = lambda: False,
    lost: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Retrains the best trial's configuration on train + validation and scores it.

    Args:
        coordinator: The shared state.
        lease: The claimed refit.
        device: Torch device to train on.
        written: Receives the ids of the artifacts written (removed if nothing is stored).
        stopping: True interrupts training.
        lost: True once the claim is no longer held.

    Returns:
        ``done`` with the result, or ``failed`` with the reason there is nothing to refit.

    Raises:
        TrainingInterrupted: If ``stopping`` became True.
        RefitLostError: If ``lost`` became True while training.
        Exception: Whatever reading, training or writing raised (the caller records it).
    """
    if lease.trial_number is None:
        return RefitState.FAILED, None, "the study has no single best trial to refit"
    storage = coordinator.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(lease.study_id, lease.trial_number)
    trial = storage.get_trial(trial_id)
    config = trial_config(trial)
    data = load_dataset(config.dataset.source, config.dataset.options)
    require_trained_data(trial, data, config.dataset.source, "not refitted")
    if not data.has_test:
        note = f"dataset {config.dataset.source!r} has no test split to score a refit on"
        return RefitState.FAILED, None, note
    epochs = refit_epochs(trial, config)
    # The trial's own schedule (over its configured epochs), stopped after the kept epoch.
    refit_config = config.model_copy(update={"patience": 0, "restore_best": False})
    merged = train_plus_validation(data)
    started = time.perf_counter()
    trained = train(
        refit_config,
        lambda epoch, _metrics: epoch >= epochs,
        device=device,
        should_stop=_watching(stopping, lost),
        data=merged,
        # This machine's cache only: no trial uses a generator of train + validation, so
        # none would name (and keep, then remove) a shared copy.
        artifacts=LocalArtifactCache(),
    )
    duration = time.perf_counter() - started
    report = evaluate_weights(
        refit_config, trained.state_dict, split="test", data=data, device=device
    )
    weights, card_id = refit_artifact_ids(lease.study_id, lease.attempt)
    coordinator.artifacts.write(weights, io.BytesIO(weights_bytes(trained.state_dict)))
    written.append(weights)
    result = RefitResult(
        trial_number=trial.number,
        epochs=epochs,
        train_samples=len(merged.train_y),
        weights=weights,
        card=None,
        test_metrics=report.metrics,
        test_per_class=report.per_class,
        test_confusion=report.confusion,
        test_samples=report.samples,
        duration_s=duration,
    )
    card = _store_card(coordinator, lease, trial, result, card_id, report.most_confused)
    if card is not None:
        written.append(card)
        result = dataclasses.replace(result, card=card)
    return RefitState.DONE, result, None


def train_plus_validation(data: ImageData) -> ImageData:
    """The dataset with the validation split added to the training split.

    The training loop still scores a "validation" split after each epoch; here that is the
    test split, whose numbers nothing reads (no pruning, no early stopping). Mean and
    standard deviation stay the training split's; the fingerprint changes, so whatever an
    imbalance strategy caches per dataset (the ``gan`` generator) is trained anew.
    """
    assert data.test_x is not None and data.test_y is not None
    fingerprint = hashlib.sha256(f"{data.fingerprint}+validation".encode()).hexdigest()
    return ImageData(
        train_x=torch.cat([data.train_x, data.val_x]),
        train_y=torch.cat([data.train_y, data.val_y]),
        val_x=data.test_x,
        val_y=data.test_y,
        classes=data.classes,
        mean=data.mean,
        std=data.std,
        fingerprint=fingerprint,
        test_x=data.test_x,
        test_y=data.test_y,
    )


def _watching(stopping: Callable[[], bool], lost: Callable[[], bool]) -> Callable[[], bool]:
    """``should_stop`` for training: True once the worker stops; raises once the claim is
    lost (its ``JobKeeper`` found another worker holding it)."""

    def should_stop() -> bool:
        if lost():
            raise RefitLostError(
                "its claim is no longer this worker's (taken over, or the study was resumed "
                "or deleted)"
            )
        return stopping()

    return should_stop


def _store_card(
    coordinator: Coordinator,
    lease: RefitLease,
    trial: FrozenTrial,
    result: RefitResult,
    artifact_id: str,
    most_confused: list[dict[str, Any]],
) -> str | None:
    """Writes the refit model's card, with its most frequent test mistakes; None if it
    could not be built (bundles build their own, so a card is never worth the result)."""
    try:
        spec = coordinator.spec(lease.study_id)
        card = build_card(
            as_refit_trial(trial, result, most_confused),
            study_id=lease.study_id,
            study_name=coordinator.storage.get_study_name_from_id(lease.study_id),
            metrics=spec.metrics,
            directions=spec.directions,
        )
        body = (json.dumps(card, indent=2, allow_nan=False) + "\n").encode()
        coordinator.artifacts.write(artifact_id, io.BytesIO(body))
    except Exception as exc:
        logger.warning("study %s: the refit's model card is not stored: %s", lease.study_id, exc)
        return None
    return artifact_id


def _release(coordinator: Coordinator, lease: RefitLease) -> None:
    try:
        coordinator.release_refit(lease)
    except Exception as exc:  # it goes stale instead and is taken over later
        logger.warning("refit of study %s not given back: %s", lease.study_id, describe(exc))


def _remove(coordinator: Coordinator, artifact_ids: list[str]) -> None:
    for artifact_id in artifact_ids:
        try:
            remove_quietly(coordinator.artifacts, artifact_id)
        except Exception as exc:  # a leftover file is no reason to stop the worker
            logger.warning("cannot remove artifact %s: %s", artifact_id, exc)


def refit_epochs(trial: FrozenTrial, config: TrialConfig) -> int:
    """The epochs a refit trains: those up to the epoch whose weights the trial kept (its
    best with ``restore_best``), else those it ran, else its configured ones."""
    kept = trial.user_attrs.get(attrs.BEST_EPOCH)
    if isinstance(kept, int) and kept > 0:
        return kept
    return len(trial.user_attrs.get(attrs.HISTORY) or []) or config.epochs


__all__ = ["RefitLostError", "refit", "refit_epochs", "run_refit", "train_plus_validation"]
