"""Run one claimed trial: suggest, train, record, tell. Never leaves it RUNNING."""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automl.space import suggest
from automl.spec import StudySpec
from automl.store import INTERRUPTED_PREFIX, attrs, get_status, save_weights
from automl.train import TrainingInterrupted, TrainResult, train

logger = logging.getLogger("automl.worker")

STATUS_CHECK_INTERVAL_S = 5.0
MAX_ERROR_CHARS = 4000


@dataclass
class Claim:
    """A trial this worker owns (state RUNNING), with its study."""

    study_id: int
    study: optuna.Study
    trial: optuna.Trial
    spec: StudySpec


class StudyStopped(Exception):
    """The study was cancelled or ended while one of its trials was training."""


def run_trial(
    storage: BaseStorage,
    claim: Claim,
    *,
    device: str,
    artifacts_dir: Path,
    should_stop: Callable[[], bool],
) -> FrozenTrial:
    """Trains the claimed trial and tells Optuna how it ended.

    The trial ends COMPLETE, PRUNED or FAIL (with the error kept in its ``automl.error``
    user attribute), whatever happens inside, including interruption.

    Returns:
        The finished trial.
    """
    trial, spec = claim.trial, claim.spec
    started = time.perf_counter()
    try:
        config = suggest(trial, spec)
        trial.set_user_attr(attrs.CONFIG, config.model_dump(mode="json"))
        report = _reporter(storage, claim)
        result = train(
            config, report, device=device, should_stop=should_stop, monitor=spec.metrics[0]
        )
        _record(trial, result)
        if result.pruned:
            frozen = claim.study.tell(trial, state=TrialState.PRUNED)
        else:
            values = [result.metrics[metric] for metric in spec.metrics]
            if not all(math.isfinite(value) for value in values):
                raise FloatingPointError(f"objective is not finite: {values}")
            save_weights(storage, trial, result.state_dict, artifacts_dir)
            frozen = claim.study.tell(trial, values)
    except (TrainingInterrupted, StudyStopped) as exc:
        frozen = _fail(claim, f"{INTERRUPTED_PREFIX} {exc}")
    except Exception as exc:
        logger.debug("trial %s failed", trial.number, exc_info=True)
        frozen = _fail(claim, _describe(exc))
    _log(claim, frozen, time.perf_counter() - started)
    return frozen


def _reporter(storage: BaseStorage, claim: Claim) -> Callable[[int, dict[str, float]], bool]:
    """Reports each epoch's objective for pruning, and stops if the study ends meanwhile."""
    single = len(claim.spec.metrics) == 1
    metric = claim.spec.metrics[0]
    last_check = time.monotonic()

    def report(epoch: int, metrics: dict[str, float]) -> bool:
        nonlocal last_check
        if time.monotonic() - last_check > STATUS_CHECK_INTERVAL_S:
            last_check = time.monotonic()
            status = get_status(storage, claim.study_id)
            if not status.is_active:
                raise StudyStopped(f"study became {status.value}")
        if not single:
            return False
        value = metrics[metric]
        if not math.isfinite(value):
            raise FloatingPointError(f"{metric} is not finite at epoch {epoch}: {value}")
        claim.trial.report(value, epoch)
        return claim.trial.should_prune()

    return report


def _record(trial: optuna.Trial, result: TrainResult) -> None:
    trial.set_user_attr(attrs.METRICS, result.metrics)
    trial.set_user_attr(attrs.HISTORY, result.history)
    trial.set_user_attr(attrs.PER_CLASS, result.per_class)
    trial.set_user_attr(attrs.CONFUSION, result.confusion)


def _fail(claim: Claim, error: str) -> FrozenTrial:
    try:
        claim.trial.set_user_attr(attrs.ERROR, error[:MAX_ERROR_CHARS])
    finally:
        frozen = claim.study.tell(claim.trial, state=TrialState.FAIL, skip_if_finished=True)
    return frozen


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _log(claim: Claim, frozen: FrozenTrial, seconds: float) -> None:
    outcome = frozen.state.name.lower()
    if frozen.state == TrialState.COMPLETE and frozen.values is not None:
        outcome += " " + ", ".join(
            f"{name}={value:.4f}"
            for name, value in zip(claim.spec.metrics, frozen.values, strict=True)
        )
    elif frozen.state == TrialState.FAIL:
        outcome += ": " + str(frozen.user_attrs.get(attrs.ERROR, ""))
    logger.info("study %s trial %s %s (%.1fs)", claim.study_id, frozen.number, outcome, seconds)


__all__ = ["Claim", "StudyStopped", "run_trial"]
