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

from automl.spec import CategoricalParam, IntParam, ParamSpec, StudySpec, conditional_order
from automl.train import TrialConfig
from automl.train.hyperparameters import config_data


def to_distribution(param: ParamSpec) -> BaseDistribution:
    """The Optuna distribution of one spec param."""
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step or 1)
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def is_active(spec: StudySpec, name: str, chosen: Mapping[str, Any]) -> bool:
    """Whether the param ``name`` applies, given the values chosen so far for its parents
    (its ``when``, the selector its entry option implies, and the option of that entry
    its ``APPLIES_WHEN`` names: ``StudySpec.conditions``)."""
    return all(
        parent in chosen and chosen[parent] in values
        for parent, values in spec.conditions(name).items()
    )


def suggest(trial: optuna.Trial, spec: StudySpec, seed: int | None = None) -> TrialConfig:
    """Asks ``trial`` for a value of every active param and builds the full configuration.

    Parents are suggested before their children; a param whose conditions do not hold is
    not suggested at all, so the sampler never sees it for that trial.

    Args:
        trial: The trial to ask.
        spec: The study's spec.
        seed: The training seed when the spec neither fixes nor searches ``seed``.
    """
    chosen: dict[str, Any] = {}
    for name in conditional_order(spec):
        if not is_active(spec, name, chosen):
            continue
        distribution = to_distribution(spec.params[name])
        chosen[name] = _ask(trial, name, distribution)
    return build_config(spec, chosen, seed)


def _ask(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    assert isinstance(distribution, FloatDistribution)
    return trial.suggest_float(
        name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
    )


def build_config(
    spec: StudySpec, params: Mapping[str, Any], seed: int | None = None
) -> TrialConfig:
    """Combines the spec's dataset and fixed values with a trial's ``params``, and ``seed``
    as the training seed unless the spec fixes or searches one."""
    dataset = {"source": spec.dataset.source, "options": spec.dataset.options}
    default = {} if seed is None else {"seed": seed}
    values = {**default, **spec.fixed, **params}
    return TrialConfig.model_validate(config_data(dataset, values, spec.chosen))
