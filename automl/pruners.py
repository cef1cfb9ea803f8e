"""Optuna pruners, registered by name with their options (checked like samplers').

Every option reaches Optuna with its documented default filled in. A trial reports its
epochs as steps counted from 1, while Optuna's step options count from 0, so the options
that count epochs before pruning starts are translated here (``n_warmup_steps: k``: the
first prune can come at epoch k + 1), and Hyperband's ``max_resource`` is the trial's epoch
count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import optuna
from optuna.trial import TrialState
from pydantic import BeforeValidator, Field, model_validator

from automl.registry import MAX_COUNT, EntryOptions, Registry

if TYPE_CHECKING:
    from automl.spec import StudySpec

PrunerFactory = Callable[[dict[str, Any], int | None], optuna.pruners.BasePruner]
"""Builds a pruner from its checked options (every one, defaults filled in) and the most
epochs a trial trains (None when unknown)."""

PRUNERS: Registry[PrunerFactory] = Registry("pruner")


def _steps_or_auto(value: Any) -> Any:
    """One message for the union (pydantic gives one per member)."""
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT
    ):
        return value
    raise ValueError(f"{value!r} is neither a whole number from 1 to {MAX_COUNT} nor 'auto'")


StepsOrAuto = Annotated[int | Literal["auto"], BeforeValidator(_steps_or_auto)]


class MedianOptions(EntryOptions):
    """Options of the median pruner."""

    n_startup_trials: int = Field(
        5, ge=0, le=MAX_COUNT, description="Trials that are never pruned."
    )
    n_warmup_steps: int = Field(
        0, ge=0, le=MAX_COUNT, description="Epochs before pruning starts in a trial."
    )
    interval_steps: int = Field(
        1, ge=1, le=MAX_COUNT, description="Epochs between pruning checks (from the first)."
    )
    n_min_trials: int = Field(
        1, ge=1, le=MAX_COUNT, description="Trials reported at a step before pruning."
    )


class PercentileOptions(MedianOptions):
    """Options of the percentile pruner."""

    percentile: float = Field(25.0, ge=0, le=100, description="Keep trials above this.")


class HyperbandOptions(EntryOptions):
    """Options of the Hyperband pruner (epochs are the resource)."""

    min_resource: int = Field(1, ge=1, le=MAX_COUNT, description="Epochs every trial gets.")
    max_resource: StepsOrAuto = Field(
        "auto", description="Epochs of a full trial ('auto': the trial's epochs)."
    )
    reduction_factor: int = Field(
        3, ge=2, le=100, description="Share kept at each rung: 1 / factor."
    )

    @model_validator(mode="after")
    def _check_resources(self) -> HyperbandOptions:
        if self.max_resource != "auto" and self.min_resource > self.max_resource:
            message = f"min_resource ({self.min_resource}) is above max_resource"
            raise ValueError(f"{message} ({self.max_resource})")
        return self


class SuccessiveHalvingOptions(EntryOptions):
    """Options of the successive-halving pruner (epochs are the resource)."""

    min_resource: StepsOrAuto = Field("auto", description="Epochs of the first rung.")
    reduction_factor: int = Field(
        4, ge=2, le=100, description="Share kept at each rung: 1 / factor."
    )
    min_early_stopping_rate: int = Field(
        0, ge=0, le=100, description="Rungs skipped before pruning."
    )


class ThresholdOptions(EntryOptions):
    """Options of the threshold pruner: give lower, upper or both."""

    lower: float | None = Field(None, description="Prune below this value.")
    upper: float | None = Field(None, description="Prune above this value.")
    n_warmup_steps: int = Field(
        0, ge=0, le=MAX_COUNT, description="Epochs before pruning starts in a trial."
    )
    interval_steps: int = Field(
        1, ge=1, le=MAX_COUNT, description="Epochs between pruning checks (from the first)."
    )


class WilcoxonOptions(EntryOptions):
    """Options of the Wilcoxon pruner."""

    p_threshold: float = Field(0.1, ge=0, le=1, description="p-value below which to prune.")
    n_startup_steps: int = Field(
        2,
        ge=0,
        le=MAX_COUNT,
        description="Epochs before pruning starts in a trial (never before epoch 2).",
    )


def _from_epoch_one(options: dict[str, Any], option: str) -> dict[str, Any]:
    """``options`` with ``option``, a count of epochs before pruning starts, as Optuna
    reads it: Optuna's first prune comes at step ``k`` (steps from 0) or once ``k`` steps
    are reported (Wilcoxon), epoch ``k`` here; the documented meaning is epoch ``k + 1``."""
    return {**options, option: options[option] + 1}


def _median_pruner(options: dict[str, Any], epochs: int | None) -> optuna.pruners.BasePruner:
    """Optuna's ``MedianPruner``, its warm-up counted in epochs from 1."""
    return optuna.pruners.MedianPruner(**_from_epoch_one(options, "n_warmup_steps"))


def _percentile_pruner(options: dict[str, Any], epochs: int | None) -> optuna.pruners.BasePruner:
    """Optuna's ``PercentilePruner``, its warm-up counted in epochs from 1."""
    return optuna.pruners.PercentilePruner(**_from_epoch_one(options, "n_warmup_steps"))


def _threshold_pruner(options: dict[str, Any], epochs: int | None) -> optuna.pruners.BasePruner:
    """Optuna's ``ThresholdPruner``, its warm-up counted in epochs from 1."""
    return optuna.pruners.ThresholdPruner(**_from_epoch_one(options, "n_warmup_steps"))


def _wilcoxon_pruner(options: dict[str, Any], epochs: int | None) -> optuna.pruners.BasePruner:
    """Optuna's ``WilcoxonPruner``, its start-up counted as epochs before pruning starts."""
    return optuna.pruners.WilcoxonPruner(**_from_epoch_one(options, "n_startup_steps"))


class _Hyperband(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband whose ``max_resource='auto'`` is the most epochs a finished trial
    reported: Optuna adds one to the last step, counting steps from 0 (epochs count from 1).
    """

    def _try_initialization(self, study: optuna.Study) -> None:
        if self._max_resource == "auto":
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            last_steps = [trial.last_step for trial in trials if trial.last_step is not None]
            if not last_steps:
                return
            self._max_resource = max(last_steps)
        super()._try_initialization(study)


def _hyperband_pruner(options: dict[str, Any], epochs: int | None) -> optuna.pruners.BasePruner:
    """Hyperband over epochs; ``max_resource: auto`` is ``epochs`` when known."""
    if options["max_resource"] == "auto" and epochs is not None:
        options = {**options, "max_resource": epochs}
    return _Hyperband(**options)


def _successive_halving_pruner(
    options: dict[str, Any], epochs: int | None
) -> optuna.pruners.BasePruner:
    """Optuna's ``SuccessiveHalvingPruner``: a rung of ``r`` epochs is judged at step ``r``,
    after ``r`` epochs, so its options need no translation."""
    return optuna.pruners.SuccessiveHalvingPruner(**options)


PRUNERS.add(
    "none",
    lambda options, epochs: optuna.pruners.NopPruner(),
    description="Never prune: every trial runs all its epochs.",
)
PRUNERS.add(
    "median",
    _median_pruner,
    options=MedianOptions,
    description="Stop a trial that is worse than the median of earlier trials at an epoch.",
)
PRUNERS.add(
    "percentile",
    _percentile_pruner,
    options=PercentileOptions,
    description="Stop a trial outside the best percentile of earlier trials at an epoch.",
)
PRUNERS.add(
    "hyperband",
    _hyperband_pruner,
    options=HyperbandOptions,
    description="Hyperband: several successive-halving brackets over epochs.",
)
PRUNERS.add(
    "successive_halving",
    _successive_halving_pruner,
    options=SuccessiveHalvingOptions,
    description="Asynchronous successive halving: only the best share of a rung goes on.",
)
PRUNERS.add(
    "threshold",
    _threshold_pruner,
    options=ThresholdOptions,
    description="Stop a trial whose value leaves [lower, upper].",
)
PRUNERS.add(
    "wilcoxon",
    _wilcoxon_pruner,
    options=WilcoxonOptions,
    description="Wilcoxon signed-rank test against the best trial.",
)


def build_pruner(
    name: str, options: Mapping[str, Any], epochs: int | None = None
) -> optuna.pruners.BasePruner:
    """Builds the pruner ``name`` with ``options`` (checked by its options model, every
    option passed with its documented default).

    Args:
        name: The pruner's registered name.
        options: Its options, as the spec gives them.
        epochs: The most epochs a trial of the study trains (``trial_epochs``), for
            Hyperband's ``max_resource: auto``; None leaves it to the trials seen.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        pydantic.ValidationError: If an option is unknown or of the wrong type or range.
        TypeError, ValueError: If Optuna refuses the combination of options.
    """
    entry = PRUNERS.get(name)
    checked = entry.parse_options(options).model_dump()
    with warnings.catch_warnings():
        # Offered on purpose (wilcoxon): a warning per build in every log is noise.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return entry.factory(checked, epochs)


def trial_epochs(spec: StudySpec) -> int:
    """The most epochs a trial of ``spec`` trains: its fixed ``epochs``, the largest value
    its searched ``epochs`` can take, or the default (where the param does not apply)."""
    from automl.train.trial_config import TrialConfig  # pulls in the training registries

    fallback = spec.fixed.get("epochs", TrialConfig.model_fields["epochs"].get_default())
    param = spec.params.get("epochs")
    if param is None:
        return int(fallback)
    bounds = [_largest_value(param)]
    if spec.conditions("epochs"):
        bounds.append(int(fallback))
    return max(bounds)


def _largest_value(param: Any) -> int:
    """The largest whole number a searched int or categorical param can take."""
    if param.type == "categorical":
        return max(int(choice) for choice in param.choices)
    step = param.step or 1
    return int(param.low + (param.high - param.low) // step * step)
