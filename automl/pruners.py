"""Optuna pruners, registered by name; options are the pruner's keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from automl.registry import Registry

PrunerFactory = Callable[[dict[str, Any]], optuna.pruners.BasePruner]

PRUNERS: Registry[PrunerFactory] = Registry("pruner")

PRUNERS.add("none", lambda options: optuna.pruners.NopPruner(**options))
PRUNERS.add("median", lambda options: optuna.pruners.MedianPruner(**options))
PRUNERS.add("percentile", lambda options: optuna.pruners.PercentilePruner(**options))
PRUNERS.add("hyperband", lambda options: optuna.pruners.HyperbandPruner(**options))
PRUNERS.add("successive_halving", lambda options: optuna.pruners.SuccessiveHalvingPruner(**options))
PRUNERS.add("threshold", lambda options: optuna.pruners.ThresholdPruner(**options))
PRUNERS.add("wilcoxon", lambda options: optuna.pruners.WilcoxonPruner(**options))


def build_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Builds the pruner ``name`` with keyword ``options``.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        TypeError, ValueError: If the options do not fit the pruner.
    """
    return PRUNERS.get(name)(dict(options))
