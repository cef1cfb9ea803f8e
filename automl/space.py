"""Spec params <-> Optuna: turn a trial's suggestions into a ``TrialConfig``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from automl.spec import ParamSpec, StudySpec, conditional_order
from automl.train import DatasetConfig, TrialConfig


def to_distribution(param: ParamSpec) -> BaseDistribution:
    """The Optuna distribution of one spec param."""
    if param.type == "categorical":
        return CategoricalDistribution(param.choices or [])
    assert param.low is not None and param.high is not None
    if param.type == "int":
        step = int(param.step) if param.step is not None else 1
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def is_active(param: ParamSpec, chosen: Mapping[str, Any]) -> bool:
    """Whether a param applies, given the values chosen so far for its parents."""
    return all(
        parent in chosen and chosen[parent] in values
        for parent, values in param.conditions().items()
    )


def suggest(trial: optuna.Trial, spec: StudySpec) -> TrialConfig:
    """Asks ``trial`` for a value of every active param and builds the full configuration.

    Parents are suggested before their children; a param whose ``when`` does not hold
    is not suggested at all, so the sampler never sees it for that trial.
    """
    chosen: dict[str, Any] = {}
    for name in conditional_order(spec.params):
        param = spec.params[name]
        if not is_active(param, chosen):
            continue
        distribution = to_distribution(param)
        if isinstance(distribution, CategoricalDistribution):
            chosen[name] = trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            chosen[name] = trial.suggest_int(
                name, distribution.low, distribution.high, step=distribution.step, log=param.log
            )
        else:
            chosen[name] = trial.suggest_float(
                name, distribution.low, distribution.high, step=distribution.step, log=param.log
            )
    return build_config(spec, chosen)


def build_config(spec: StudySpec, params: Mapping[str, Any]) -> TrialConfig:
    """Combines the spec's dataset and fixed values with a trial's ``params``."""
    dataset = DatasetConfig(source=spec.dataset.source, options=spec.dataset.options)
    return TrialConfig(dataset=dataset, **{**spec.fixed, **params})
