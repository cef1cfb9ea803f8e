"""The Pareto front of a study's completed trials, from their objective values alone.

``pareto_front`` gives the trials that Optuna's ``Study.best_trials`` gives, from the
values that ``optuna_rows.completed_values`` reads in one query, so that only the front's
trials need loading (their attributes can be large) and not every trial of the study.
Those values are of automl's trials only (``optuna_rows.AUTOML_TRIAL``): a trial added to
the study with plain Optuna neither is on the front nor dominates one of automl's, where
``Study.best_trials`` would count it.

A trial is on the front when no other trial dominates it: is nowhere worse and somewhere
better, each objective in its direction. As in Optuna, trials with equal values stand or
fall together (all of them are on the front, or none), and infinities compare as numbers.

Where Optuna has no answer, a trial is left out of the front (it neither is on it nor
dominates another): a value that is NaN (SQLite stores it as NULL, which Optuna's storage
cannot read back; on PostgreSQL a NaN makes Optuna drop trials that no other trial
dominates), or values missing for some objectives (Optuna raises). automl never completes
such a trial (a worker fails a trial whose objective is not finite), and Optuna's own
``tell`` fails a NaN. Optuna's constrained optimization (``constraints_func``), which
would also filter the trials, is not used by any automl sampler.

Cost: sorting the distinct value vectors, then one pass for two objectives and one
vectorized pass per trial on the front for more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K")


def pareto_front(values: Mapping[K, Sequence[float | None]], directions: Sequence[str]) -> set[K]:
    """The keys of ``values`` on the Pareto front, as Optuna's ``best_trials`` has them.

    Args:
        values: Each trial's objective values as stored (by trial id, say); ``None``
            stands for a NaN that SQLite stored as NULL.
        directions: ``"minimize"`` or ``"maximize"`` for each objective.

    Returns:
        The keys of the trials that no other trial dominates (see the module).
    """
    signs = [-1.0 if direction == "maximize" else 1.0 for direction in directions]
    keys = [key for key, vector in values.items() if _comparable(vector, len(signs))]
    if not keys:
        return set()
    costs = np.array([[s * float(v) for s, v in zip(signs, values[k], strict=True)] for k in keys])
    on_front = _on_front(costs)
    return {key for key, front in zip(keys, on_front.tolist(), strict=True) if front}


def _comparable(vector: Sequence[float | None], objectives: int) -> bool:
    """Whether a trial's values have a place on the front: one per objective, none NaN."""
    return len(vector) == objectives and not any(v is None or math.isnan(v) for v in vector)


def _on_front(costs: np.ndarray) -> np.ndarray:
    """Which rows of ``costs`` (lower is better, no NaN) no other row dominates."""
    distinct, which = np.unique(costs, axis=0, return_inverse=True)
    # Sorted lexicographically, a row can only be dominated by a row before it.
    if distinct.shape[1] == 2:
        on_front = _on_front_sorted_2d(distinct)
    else:
        on_front = _on_front_sorted(distinct)
    return on_front[which.reshape(-1)]


def _on_front_sorted_2d(distinct: np.ndarray) -> np.ndarray:
    """Two objectives, distinct rows in lexicographic order: a row is on the front when
    its second cost is below every earlier row's (one sweep)."""
    lowest_before = np.minimum.accumulate(distinct[:, 1])
    on_front = np.ones(len(distinct), dtype=bool)
    on_front[1:] = distinct[1:, 1] < lowest_before[:-1]
    return on_front


def _on_front_sorted(distinct: np.ndarray) -> np.ndarray:
    """Any number of objectives, distinct rows in lexicographic order: the first row left
    is on the front; drop the rows it dominates (nowhere better than it) and repeat."""
    on_front = np.zeros(len(distinct), dtype=bool)
    left = np.arange(len(distinct))
    while len(left):
        first = left[0]
        on_front[first] = True
        left = left[np.any(distinct[left] < distinct[first], axis=1)]
    return on_front


__all__ = ["pareto_front"]
