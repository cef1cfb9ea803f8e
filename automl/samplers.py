"""Optuna samplers, registered by name; options are the sampler's keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from automl.registry import Registry

SamplerFactory = Callable[[dict[str, Any], int | None], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


@SAMPLERS.register("tpe")
def tpe(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Tree-structured Parzen Estimator (Bayesian); handles conditional spaces."""
    return optuna.samplers.TPESampler(seed=seed, **options)


@SAMPLERS.register("random")
def random(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Independent uniform sampling."""
    return optuna.samplers.RandomSampler(seed=seed, **options)


@SAMPLERS.register("gp")
def gp(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimization."""
    return optuna.samplers.GPSampler(seed=seed, **options)


@SAMPLERS.register("qmc")
def qmc(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """Quasi-Monte Carlo (Sobol/Halton) space filling."""
    return optuna.samplers.QMCSampler(seed=seed, **options)


@SAMPLERS.register("nsga2")
def nsga2(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
    """NSGA-II genetic algorithm, for multi-objective studies."""
    return optuna.samplers.NSGAIISampler(seed=seed, **options)


def build_sampler(
    name: str, options: dict[str, Any], seed: int | None
) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        TypeError, ValueError: If the options do not fit the sampler.
    """
    return SAMPLERS.get(name)(dict(options), seed)
