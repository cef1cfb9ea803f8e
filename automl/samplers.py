"""Optuna samplers, registered by name; options are the sampler's keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from automl.registry import Registry

SamplerFactory = Callable[[dict[str, Any], int | None], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _seeded(sampler_class: type[optuna.samplers.BaseSampler]) -> SamplerFactory:
    """A factory passing the spec's seed and options to ``sampler_class``."""

    def factory(options: dict[str, Any], seed: int | None) -> optuna.samplers.BaseSampler:
        return sampler_class(seed=seed, **options)  # type: ignore[call-arg]

    return factory


SAMPLERS.add("tpe", _seeded(optuna.samplers.TPESampler))  # Bayesian; conditional spaces
SAMPLERS.add("random", _seeded(optuna.samplers.RandomSampler))
SAMPLERS.add("gp", _seeded(optuna.samplers.GPSampler))  # Gaussian-process Bayesian
SAMPLERS.add("qmc", _seeded(optuna.samplers.QMCSampler))  # quasi-Monte Carlo space filling
SAMPLERS.add("nsga2", _seeded(optuna.samplers.NSGAIISampler))  # multi-objective genetic

SHARED_SEED_SAMPLERS = frozenset({"qmc"})
"""Samplers whose seed must be the same in every worker (QMC scrambles one sequence that
all workers walk through); the others get a different seed per trial."""


def build_sampler(
    name: str, options: dict[str, Any], seed: int | None
) -> optuna.samplers.BaseSampler:
    """Builds the sampler ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        TypeError, ValueError: If the options do not fit the sampler.
    """
    return SAMPLERS.get(name)(dict(options), seed)
