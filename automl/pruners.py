"""Optuna pruners, registered by name with their options (checked like samplers')."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import optuna
from pydantic import BeforeValidator, Field, model_validator

from automl.registry import MAX_COUNT, EntryOptions, Registry

PrunerFactory = Callable[[dict[str, Any]], optuna.pruners.BasePruner]

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
    interval_steps: int = Field(1, ge=1, le=MAX_COUNT, description="Epochs between pruning checks.")
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
        "auto", description="Epochs of a full trial ('auto': the longest seen)."
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
    interval_steps: int = Field(1, ge=1, le=MAX_COUNT, description="Epochs between pruning checks.")


class WilcoxonOptions(EntryOptions):
    """Options of the Wilcoxon pruner."""

    p_threshold: float = Field(0.1, ge=0, le=1, description="p-value below which to prune.")
    n_startup_steps: int = Field(2, ge=0, le=MAX_COUNT, description="Steps before pruning starts.")


def _percentile_pruner(options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's ``PercentilePruner``, which requires ``percentile``: the documented default
    is passed when the spec leaves it out (the other options keep Optuna's defaults)."""
    default = PercentileOptions.model_fields["percentile"].get_default()
    return optuna.pruners.PercentilePruner(**{"percentile": default, **options})


PRUNERS.add(
    "none",
    lambda options: optuna.pruners.NopPruner(),
    description="Never prune: every trial runs all its epochs.",
)
PRUNERS.add(
    "median",
    lambda options: optuna.pruners.MedianPruner(**options),
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
    lambda options: optuna.pruners.HyperbandPruner(**options),
    options=HyperbandOptions,
    description="Hyperband: several successive-halving brackets over epochs.",
)
PRUNERS.add(
    "successive_halving",
    lambda options: optuna.pruners.SuccessiveHalvingPruner(**options),
    options=SuccessiveHalvingOptions,
    description="Asynchronous successive halving: only the best share of a rung goes on.",
)
PRUNERS.add(
    "threshold",
    lambda options: optuna.pruners.ThresholdPruner(**options),
    options=ThresholdOptions,
    description="Stop a trial whose value leaves [lower, upper].",
)
PRUNERS.add(
    "wilcoxon",
    lambda options: optuna.pruners.WilcoxonPruner(**options),
    options=WilcoxonOptions,
    description="Wilcoxon signed-rank test against the best trial.",
)


def build_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """Builds the pruner ``name`` with ``options`` (checked by its options model).

    Raises:
        UnknownNameError: If ``name`` is not registered.
        pydantic.ValidationError: If an option is unknown or of the wrong type or range.
        TypeError, ValueError: If Optuna refuses the combination of options.
    """
    entry = PRUNERS.get(name)
    checked = entry.parse_options(options).model_dump(exclude_unset=True)
    return entry.factory(checked)
